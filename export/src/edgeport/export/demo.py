"""``edgeport demo``: the whole pipeline on the embedded digits, ending in a Markdown report.

train simple_cnn_bn -> evaluate -> export (fp32, fp16, int8; engines when a TensorRT module is
installed) -> check every artifact against PyTorch -> predict raw image files with the bundle ->
benchmark against PyTorch eager -> ``REPORT.md``. Each step uses the public API a user would.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeport.export.cli import int8_line
from edgeport.export.parity import headline
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.io import atomic_write_text

DEMO_MODEL = "simple_cnn_bn"
DEMO_DATA = "digits"


@dataclass(frozen=True)
class DemoConfig:
    out: Path
    epochs: int = 8
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    tensorrt: bool | None = None  # None: build engines when tensorrt or tensorrt_rtx imports
    batches: tuple[int, ...] = (1, 8, 32)
    bench_duration_s: float = 1.0
    predict_images: int = 8
    threads: int | None = None


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(start: float) -> float:
    seconds = time.perf_counter() - start
    print(f"   ({seconds:.1f} s)", flush=True)
    return seconds


def run_demo(config: DemoConfig) -> tuple[Path, bool]:
    """Run every step into ``config.out``; returns the report's path and whether all passed."""
    from edgeport.runtime.tools.check import check
    from edgeport.runtime.tools.report import bench_markdown, check_markdown

    out = config.out
    run_dir, bundle_dir = out / "run", out / "bundle"
    timings: dict[str, float] = {}
    evaluation = _train_and_evaluate(config, run_dir, timings)
    manifest = _export(config, run_dir, bundle_dir, timings)

    start = _step("4/6 check every artifact against PyTorch")
    check_report = check(bundle_dir, data=DEMO_DATA, threads=config.threads)
    print(f"   {check_report.verdict}")
    timings["check"] = _done(start)

    start = _step(f"5/6 predict {config.predict_images} raw test images with the bundle")
    predictions = _predict_files(bundle_dir, manifest, out, config)
    correct = sum(row["true"] == row["predicted"] for row in predictions)
    print(f"   {correct}/{len(predictions)} correct")
    timings["predict"] = _done(start)

    bench = _bench(config, bundle_dir, timings)
    report = _report(
        config=config,
        metrics=evaluation.to_dict(),
        manifest=manifest,
        check_text=check_markdown(check_report.to_dict(), level=3),
        predictions=predictions,
        bench_text=bench_markdown(bench, level=3),
        timings=timings,
    )
    path = atomic_write_text(out / "REPORT.md", report)
    return path, check_report.passed


def _train_and_evaluate(config: DemoConfig, run_dir: Path, timings: dict[str, float]) -> Any:
    from edgeport.train.evaluate import evaluate
    from edgeport.train.loop import TrainConfig, train

    start = _step(f"1/6 train {DEMO_MODEL} on {DEMO_DATA} for {config.epochs} epochs")
    train(
        TrainConfig(
            model=DEMO_MODEL,
            data=DEMO_DATA,
            out=run_dir,
            epochs=config.epochs,
            threads=config.threads,
            overwrite=True,
        )
    )
    timings["train"] = _done(start)
    start = _step("2/6 evaluate on the held-out test split")
    evaluation = evaluate(run_dir)
    print(f"   test accuracy {evaluation.accuracy:.2%} on {evaluation.count} images")
    timings["evaluate"] = _done(start)
    return evaluation


def _export(
    config: DemoConfig, run_dir: Path, bundle_dir: Path, timings: dict[str, float]
) -> Manifest:
    from edgeport.export.api import export
    from edgeport.runtime.backends.tensorrt import installed_flavours

    engines = bool(installed_flavours()) if config.tensorrt is None else config.tensorrt
    what = ", ".join(config.precisions) + (" + TensorRT engines" if engines else "")
    start = _step(f"3/6 export {what}")
    manifest = export(run_dir, bundle_dir, precisions=config.precisions, tensorrt=engines)
    for artifact in manifest.artifacts:
        extra = f"  ({int8_line(artifact.quantization)})" if artifact.quantization else ""
        print(f"   {artifact.name:<20} {artifact.size_bytes / 1e6:6.2f} MB  {artifact.path}{extra}")
    for target, record in manifest.export.get("int8_left_out", {}).items():
        print(f"   int8 for {target} left out: {record.get('reason')}")
    timings["export"] = _done(start)
    return manifest


def _bench(config: DemoConfig, bundle_dir: Path, timings: dict[str, float]) -> Any:
    from edgeport.runtime.tools.bench import BenchSettings, TimingConfig, benchmark
    from edgeport.runtime.tools.report import write_bench

    start = _step("6/6 benchmark against PyTorch eager")
    bench = benchmark(
        bundle_dir,
        BenchSettings(
            batches=config.batches,
            timing=TimingConfig(warmup_s=0.3, duration_s=config.bench_duration_s),
            threads=config.threads,
        ),
    )
    out = config.out
    write_bench(
        bench,
        json_path=out / "bench.json",
        markdown_path=out / "bench.md",
        plot_path=out / "bench.png",
    )
    timings["bench"] = _done(start)
    return bench


def _predict_files(
    bundle_dir: Path, manifest: Manifest, out: Path, config: DemoConfig
) -> list[dict[str, Any]]:
    """Save raw test digits as PNG files, then classify the files as a device would."""
    from PIL import Image

    from edgeport.runtime import load
    from edgeport.train.data import load_eval_arrays

    arrays = load_eval_arrays(DEMO_DATA, manifest.card, limit=config.predict_images)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, raw in enumerate(arrays.raw):
        path = image_dir / f"test{index:03d}.png"
        Image.fromarray(raw[:, :, 0] if raw.shape[2] == 1 else raw).save(path)
        paths.append(path)
    rows = []
    with load(bundle_dir, threads=config.threads) as model:
        print(f"   backend {model.backend}, precision {model.precision}")
        for path, label, prediction in zip(
            paths, arrays.labels, model.predict(paths, top_k=3), strict=True
        ):
            rows.append(
                {
                    "image": path.relative_to(out).as_posix(),
                    "true": arrays.class_names[int(label)],
                    "predicted": prediction.top1,
                    "confidence": prediction.confidence,
                    "backend": f"{model.backend} {model.precision}",
                }
            )
    return rows


def _report(
    *,
    config: DemoConfig,
    metrics: dict[str, Any],
    manifest: Manifest,
    check_text: str,
    predictions: list[dict[str, Any]],
    bench_text: str,
    timings: dict[str, float],
) -> str:
    lines = [
        "# edgeport demo report",
        "",
        f"`{DEMO_MODEL}` trained on the embedded `{DEMO_DATA}` data for {config.epochs} epochs, "
        "exported, checked, run and benchmarked by `edgeport demo`.",
        "",
        "## Training",
        "",
        f"- test accuracy: **{metrics['accuracy']:.2%}** on {metrics['count']} held-out images",
        "- curves: `run/curves.png`; predictions: `run/predictions.png`",
        "- step times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
        "",
        "## Artifacts and their export parity gate",
        "",
        "| artifact | size | parity | numbers |",
        "|---|---|---|---|",
    ]
    for art in manifest.artifacts:
        status = {True: "passed", False: "FAILED", None: "not run"}[art.parity_passed]
        numbers = headline(art.parity)
        if art.quantization:
            numbers += f"; {int8_line(art.quantization)}"
        lines.append(f"| {art.name} | {art.size_bytes / 1e6:.2f} MB | {status} | {numbers} |")
    for target, record in manifest.export.get("int8_left_out", {}).items():
        lines.append(f"| int8 for {target} | - | left out | {record.get('reason')} |")
    lines += ["", "## Check", "", check_text.strip(), "", "## Predictions on raw image files", ""]
    lines += ["| image | true | predicted | confidence | backend |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['image']} | {r['true']} | {r['predicted']} | {r['confidence']:.3f} "
        f"| {r['backend']} |"
        for r in predictions
    ]
    lines += ["", "## Latency", "", bench_text.strip(), ""]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train, export, check, predict and benchmark on the embedded digits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("demo"), help="output directory")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--no-tensorrt", action="store_true", help="skip engines even if TensorRT is installed"
    )
    parser.add_argument("--bench-duration-s", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    config = DemoConfig(
        out=args.out,
        epochs=args.epochs,
        tensorrt=False if args.no_tensorrt else None,
        bench_duration_s=args.bench_duration_s,
        threads=args.threads,
    )
    report, passed = run_demo(config)
    print(f"\nreport: {report}")
    print(f"plots:  {config.out / 'run' / 'curves.png'}, {config.out / 'run' / 'predictions.png'}")
    print(f"        {config.out / 'bench.png'}")
    if not passed:
        print("check FAILED: see the report")
    return 0 if passed else 1
