"""Every export format side by side, as Ultralytics' benchmark mode tabulates them.

simple_cnn_bn (3x32x32), resnet18 (3x224x224) and torchvision's mobilenet_v3_small (3x96x96)
are trained on the embedded digits (weights cached under ``.cache/formats``), exported by
``edgeport export`` to every format (ONNX, OpenVINO IR, ExecuTorch ``.pte``, LiteRT
``.tflite``) at fp32 and int8 (int8 calibrated on the same training images for every format),
each artifact judged against PyTorch on the held-out test digits by the export's parity gate
(top-1 agreement and accuracy drop, with the tolerance of its precision), then every artifact
and PyTorch eager are loaded in one process and timed at batch 1 in interleaved rounds on the
same images and threads.

Writes ``formats.json`` and ``formats.md`` to ``benchmarks/results/<machine>/``; ``--docs``
also replaces the table in ``docs/formats.md`` between its markers.

    python benchmarks/run_formats.py                # train (or reuse), export, check, time
    python benchmarks/run_formats.py --train-only   # only the cached training runs
    python benchmarks/run_formats.py --export-only  # and the bundles (timing needs quiet)
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_lib import REPO, STANDARD_MODELS, MatrixModel, timed, train_model

log = logging.getLogger("edgeport.benchmarks")

# mobilenet_v3_small trains at 96x96 (five epochs of batch 16 reach 95% train accuracy).
# torchvision's MobileNetV3 keeps BatchNorm statistics with momentum 0.01: after 400 steps the
# running variances still carry 0.99^400 of their initial 1.0, far above the true variance of
# some channels, and eval mode predicts one class (measured: 10% test accuracy at 95% train
# accuracy). The statistics are then recomputed over the training images (precise BatchNorm,
# :func:`precise_batchnorm`): 97% on the same weights.
PRECISE_BN = ("mobilenet_v3_small",)
PRECISE_BN_FILE = "precise_batchnorm.json"
MODELS: dict[str, MatrixModel] = {
    "simple_cnn_bn": STANDARD_MODELS["simple_cnn_bn"],
    "resnet18": MatrixModel(
        "resnet18", (224, 224), epochs=3, quick_epochs=1, batch_size=32, lr=2e-3, quick_limit=320
    ),
    "mobilenet_v3_small": MatrixModel(
        "mobilenet_v3_small",
        (96, 96),
        epochs=5,
        quick_epochs=1,
        batch_size=16,
        lr=1e-3,
        quick_limit=320,
        model="torchvision:mobilenet_v3_small",
    ),
}
FORMATS = ("onnx", "openvino", "executorch", "litert")
PRECISIONS = ("fp32", "int8")
BACKEND_OF = {"onnx": "onnxruntime-cpu", "openvino": "openvino", "executorch": "executorch"}
BACKEND_OF["litert"] = "litert"
EAGER = "PyTorch eager"
TABLE_START = "<!-- formats-table:start -->"
TABLE_END = "<!-- formats-table:end -->"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import cpu_counts, machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="short training, for validation")
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) and stop")
    parser.add_argument(
        "--export-only", action="store_true", help="train and export (or reuse), no timing"
    )
    parser.add_argument("--threads", type=int, default=cpu_counts()["usable"])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--duration-s", type=float, default=1.0, help="per artifact per round")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "formats")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / machine_slug()
    )
    parser.add_argument("--docs", action="store_true", help="update the table in docs/formats.md")
    parser.add_argument("--reexport", action="store_true", help="export again (runs are reused)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    runs = {
        name: train_model(
            MODELS[name], args.work, quick=args.quick, reuse=True, threads=args.threads
        )
        for name in names
    }
    for name in PRECISE_BN:
        if name in runs:
            precise_batchnorm(runs[name])
    if args.train_only:
        return 0
    bundles = {
        name: export_all(run, args.work / name / "bundle", reexport=args.reexport)
        for name, run in runs.items()
    }
    if args.export_only:
        return 0
    rows: list[dict[str, Any]] = []
    for name, bundle in bundles.items():
        rows += time_bundle(name, bundle, args)
    write_results(rows, args)
    return 0


def precise_batchnorm(run: Path) -> None:
    """Recompute every BatchNorm's running mean and variance as the plain average over the
    run's training images (eval-mode forward passes, no gradients) and save the weights back;
    ``precise_batchnorm.json`` records the test accuracy before and after."""
    import torch

    from edgeport.train.checkpoint import WEIGHTS_FILE, load_checkpoint, save_weights
    from edgeport.train.data import load_eval_arrays

    record = run / PRECISE_BN_FILE
    if record.is_file():
        return
    checkpoint = load_checkpoint(run)
    model, card = checkpoint.model, checkpoint.card
    train = load_eval_arrays("digits", card, split="train")
    test = load_eval_arrays("digits", card, split="test")

    def accuracy() -> float:
        with torch.no_grad():
            logits = model.eval()(torch.from_numpy(test.images))
        return float((logits.argmax(1).numpy() == test.labels).mean())

    before = accuracy()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over every batch
    model.train()
    with torch.no_grad():
        for start in range(0, len(train.images), 64):
            model(torch.from_numpy(train.images[start : start + 64]))
    after = accuracy()
    save_weights(run / WEIGHTS_FILE, model)
    log.info("precise BatchNorm on %s: test accuracy %.4f -> %.4f", run, before, after)
    summary = {"batchnorms": len(norms), "test_accuracy_before": before, "after": after}
    record.write_text(json.dumps(summary, indent=2) + "\n")


def export_all(run: Path, bundle: Path, *, reexport: bool) -> Path:
    """Every format at fp32 and int8; parity failures are kept (and shown) so that the table
    reports them instead of stopping."""
    from edgeport.export import export

    if not reexport and (bundle / "manifest.json").is_file():
        log.info("reusing the bundle %s", bundle)
        return bundle
    with timed(f"exporting {run.parent.name} to {', '.join(FORMATS)}"):
        export(run, bundle, precisions=PRECISIONS, formats=FORMATS, allow_parity_failure=True)
    return bundle


def _artifact_rows(name: str, bundle: Path) -> list[dict[str, Any]]:
    """One row per artifact (and per converter that failed): size, parity numbers."""
    from edgeport.runtime.bundle import Manifest

    manifest = Manifest.load(bundle)
    rows = []
    for art in manifest.artifacts:
        parity = art.parity or {}
        logits = (parity.get("outputs") or [{}])[0].get("comparison", {})
        rows.append(
            {
                "model": name,
                "format": art.format,
                "precision": art.precision,
                "artifact": art.name,
                "backend": BACKEND_OF[art.format],
                "size_bytes": art.total_bytes,
                "parity": parity.get("status", "unchecked"),
                "top1_agreement": logits.get("top1_agreement"),
                "accuracy": logits.get("accuracy_candidate"),
                "accuracy_drop": logits.get("accuracy_drop"),
                "max_abs": logits.get("max_abs"),
                "batch_range": str(art.batch),
            }
        )
    for failed in (manifest.export.get("formats") or {}).get("failed", []):
        rows.append({"model": name, **failed, "parity": "conversion failed"})
    return rows


def time_bundle(name: str, bundle: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """PyTorch eager and every artifact loaded together, timed at batch 1 in interleaved rounds
    on the first stored reference image, the same threads for all."""
    from edgeport.runtime import load
    from edgeport.runtime.bundle import Manifest
    from edgeport.runtime.plugins import torch_reference_class
    from edgeport.runtime.reference import load_reference
    from edgeport.runtime.tools.timing import LatencyStats, TimingConfig, time_interleaved

    manifest = Manifest.load(bundle)
    stored = load_reference(bundle, manifest)
    assert stored is not None, f"{bundle} stores no reference inputs"
    image = np.ascontiguousarray(next(iter(stored.inputs.values()))[:1], dtype=np.float32)
    rows = _artifact_rows(name, bundle)
    cls, why = torch_reference_class()
    if cls is None:
        raise SystemExit(f"the PyTorch baseline is needed: {why}")
    eager = cls(bundle, manifest, device="cpu", precision="fp32", threads=args.threads)
    steps: dict[str, Callable[[], object]] = {EAGER: functools.partial(eager.run, image)}
    opened = []
    for row in rows:
        if row["parity"] == "conversion failed":
            continue
        model = load(bundle, backend=row["backend"], artifact=row["artifact"], threads=args.threads)
        opened.append(model)
        steps[row["artifact"]] = functools.partial(model.run, image)
    config = TimingConfig(warmup_s=0.5, duration_s=args.duration_s * args.rounds)
    with timed(f"timing {name}: {len(steps)} candidates, {args.rounds} interleaved rounds"):
        samples = time_interleaved(steps, config, rounds=args.rounds)
    for model in opened:
        model.close()
    eager.close()
    stats = {key: LatencyStats.from_samples(values) for key, values in samples.items()}
    base = stats[EAGER].p50
    out = [
        {
            "model": name,
            "format": "pytorch",
            "precision": "fp32",
            "artifact": EAGER,
            "backend": "torch",
            "parity": "reference",
            "accuracy": (manifest.reference or {}).get("accuracy"),
            "p50_ms": base,
            "p90_ms": stats[EAGER].p90,
            "speedup": 1.0,
        }
    ]
    for row in rows:
        if row["artifact"] in stats:
            st = stats[row["artifact"]]
            row.update(p50_ms=st.p50, p90_ms=st.p90, speedup=base / st.p50)
        out.append(row)
    return out


def _fmt_size(size: int | None) -> str:
    return (
        "-" if size is None else f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.0f} kB"
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Ultralytics-style: per model, format and precision: size, parity, p50, speed-up."""
    lines = [
        "| model | format | precision | size | parity vs PyTorch | top-1 agreement | "
        "test accuracy (change) | p50 ms, batch 1 | speed-up vs eager |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["parity"] == "conversion failed":
            verdict = f"conversion failed: {r['error']}"
        else:
            verdict = r["parity"]
        accuracy = _fmt(r.get("accuracy"), ".2%")
        if r.get("accuracy_drop") is not None:
            accuracy += f" ({(-r['accuracy_drop'] * 100) or 0.0:+.2f} pt)"  # no -0.00
        lines.append(
            f"| {r['model']} | {r['format']} | {r['precision']} | {_fmt_size(r.get('size_bytes'))} "
            f"| {verdict} | {_fmt(r.get('top1_agreement'), '.2%')} | {accuracy} "
            f"| {_fmt(r.get('p50_ms'), '.3g')} | {_fmt(r.get('speedup'), '.2f')}x |"
        )
    return "\n".join(lines)


def _with_earlier(rows: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """``rows`` and, for the models not timed this time, the rows an earlier run saved (each
    model is timed in one process; models are compared with PyTorch, not with each other)."""
    if not path.is_file():
        return rows
    timed_now = {r["model"] for r in rows}
    earlier = [r for r in json.loads(path.read_text())["rows"] if r["model"] not in timed_now]
    order = list(MODELS)
    return sorted(earlier + rows, key=lambda r: order.index(r["model"]))


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from edgeport.runtime.envinfo import collect_environment

    args.out.mkdir(parents=True, exist_ok=True)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = _with_earlier(rows, args.out / "formats.json")
    data = {
        "created": created,
        "command": "python benchmarks/run_formats.py" + (" --docs" if args.docs else ""),
        "threads": args.threads,
        "rounds": args.rounds,
        "duration_s_per_round": args.duration_s,
        "models": {n: MODELS[n].shape for n in dict.fromkeys(r["model"] for r in rows)},
        "rows": rows,
        "environment": collect_environment(threads=args.threads),
    }
    (args.out / "formats.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    table = markdown_table(rows)
    header = (
        f"Measured {created} with `python benchmarks/run_formats.py`: batch 1, {args.threads} "
        f"threads, every artifact and PyTorch eager loaded in one process and timed in "
        f"{args.rounds} interleaved rounds of {args.duration_s} s each on the same image. Parity: "
        "the export's gate on the held-out digits (top-1 agreement with PyTorch fp32, test "
        "accuracy and its change). Inputs: "
        + ", ".join(f"{n} {shape}" for n, shape in data["models"].items())
        + ".\n"
    )
    (args.out / "formats.md").write_text(f"# Export formats side by side\n\n{header}\n{table}\n")
    print(table)
    if args.docs:
        page = REPO / "docs" / "formats.md"
        text = page.read_text()
        start, end = text.index(TABLE_START), text.index(TABLE_END)
        page.write_text(text[:start] + f"{TABLE_START}\n{header}\n{table}\n" + text[end:])


if __name__ == "__main__":
    sys.exit(main())
