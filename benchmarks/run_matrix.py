"""The standard CPU benchmark matrix (``make bench``).

simple_cnn_bn at 3x32x32 and resnet18 at 3x224x224, trained on the embedded digits (resized,
3 channels), exported to ONNX fp32/fp16/int8, checked against PyTorch, and benchmarked at batch
1, 8 and 32 on ONNX Runtime CPU against PyTorch eager and torch.compile, all in one run.
Writes JSON, CSV, Markdown and a plot to ``benchmarks/results/<machine>/`` and prints the
issue's "must show" ratios, measured side by side.

    python benchmarks/run_matrix.py               # the real run (about 10 minutes on 2 cores)
    python benchmarks/run_matrix.py --quick       # a short validation run into runs/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_lib import (
    REPO,
    STANDARD_MODELS,
    export_bundle,
    int8_accuracy_lost,
    test_accuracy,
    timed,
    train_model,
)

log = logging.getLogger("edgeport.benchmarks")

BACKEND = "onnxruntime-cpu"
PRECISIONS = ("fp32", "fp16", "int8")
# Must show (issue 5): measured side by side in one run on the 2-core CPU; printed, not asserted.
TARGETS = (
    ("simple_cnn_bn", "fp32", 4.0, "ONNX Runtime fp32 vs PyTorch eager, batch 1"),
    ("resnet18", "fp32", 1.7, "ONNX Runtime fp32 vs PyTorch eager, batch 1"),
    ("resnet18", "int8", 3.0, "ONNX Runtime int8 vs PyTorch eager, batch 1"),
)
MAX_INT8_LOSS_POINTS = 1.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import cpu_counts, machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for validation")
    parser.add_argument("--models", default=",".join(STANDARD_MODELS), help="comma-separated")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--baselines", default="torch,torch-compile")
    parser.add_argument("--warmup-s", type=float, help="default 1 (quick: 0.2)")
    parser.add_argument("--duration-s", type=float, help="default 3 (quick: 0.5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=cpu_counts()["usable"],
        help="threads for ONNX Runtime and PyTorch (default: the usable CPUs)",
    )
    parser.add_argument("--epochs", type=int, help="override every model's training epochs")
    parser.add_argument("--work", type=Path, help="runs and bundles (default runs/bench-matrix)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results folder (default benchmarks/results/{machine_slug()}; "
        "with --quick runs/bench-quick/<machine>)",
    )
    parser.add_argument("--reuse", action="store_true", help="reuse trained runs and bundles")
    args = parser.parse_args(argv)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (0.2 if args.quick else 1.0)
    args.duration_s = (
        args.duration_s if args.duration_s is not None else (0.5 if args.quick else 3.0)
    )
    args.work = args.work or REPO / "runs" / ("bench-quick" if args.quick else "bench-matrix")
    if args.out is None:
        base = REPO / "runs" / "bench-quick" if args.quick else REPO / "benchmarks" / "results"
        args.out = base / machine_slug()
    return args


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from edgeport.runtime.io import atomic_write_json, atomic_write_text
    from edgeport.runtime.tools.bench import (
        BenchSettings,
        TimingConfig,
        benchmark,
        parse_batches,
        parse_list,
    )
    from edgeport.runtime.tools.check import check
    from edgeport.runtime.tools.report import bench_markdown, check_markdown, write_bench

    spec = STANDARD_MODELS[name]
    run_dir = train_model(
        spec,
        args.work,
        quick=args.quick,
        reuse=args.reuse,
        threads=args.threads,
        epochs=args.epochs,
    )
    bundle = export_bundle(
        run_dir, args.work / name / "bundle", precisions=PRECISIONS, reuse=args.reuse
    )
    with timed(f"checking {name}"):
        report = check(bundle, backends=(BACKEND,), threads=args.threads).to_dict()
    with timed(f"benchmarking {name}"):
        settings = BenchSettings(
            backends=(BACKEND,),
            precisions=PRECISIONS,
            batches=parse_batches(args.batches),
            timing=TimingConfig(warmup_s=args.warmup_s, duration_s=args.duration_s),
            threads=args.threads,
            baselines=parse_list(args.baselines, ("torch", "torch-compile"), "baselines") or (),
        )
        result = benchmark(bundle, settings)
    out = args.out
    write_bench(result, json_path=out / f"{name}.json", csv_path=out / f"{name}.csv")
    atomic_write_json(out / f"{name}.check.json", report)
    md = bench_markdown(result, title=f"{name} {spec.shape}", level=3)
    md += "\n" + check_markdown(report, level=4)
    atomic_write_text(out / f"{name}.md", md)
    return {"spec": spec, "run_dir": run_dir, "result": result, "check": report}


def must_show(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    lines = []
    for name, precision, target, what in TARGETS:
        entry: dict[str, Any] = {"model": name, "what": what, "target": target}
        if name in models:
            row = models[name]["result"].find(BACKEND, precision, 1)
            eager = models[name]["result"].find("torch", "fp32", 1)
            entry.update(
                ratio=row.speedup_vs_eager if row else None,
                ort_p50_ms=row.latency.p50 if row else None,
                eager_p50_ms=eager.latency.p50 if eager else None,
            )
        ratio = entry.get("ratio")
        entry["met"] = ratio is not None and ratio >= target
        lines.append(entry)
    if "resnet18" in models:
        lost = int8_accuracy_lost(models["resnet18"]["check"], BACKEND)
        lines.append(
            {
                "model": "resnet18",
                "what": "int8 accuracy lost on the check data (points)",
                "target": MAX_INT8_LOSS_POINTS,
                "ratio": lost,
                "met": lost is not None and lost <= MAX_INT8_LOSS_POINTS,
            }
        )
    return lines


def summary_markdown(models: dict[str, dict[str, Any]], shown: list[dict[str, Any]]) -> str:
    from edgeport.runtime.tools.report import fmt_ms, fmt_pct

    first = next(iter(models.values()))["result"]
    env = first.environment
    cpu = env["cpu"]
    lines = [
        f"# CPU benchmark matrix: {cpu['model']} ({cpu['usable']} CPUs)",
        "",
        f"Measured {first.created} with `python benchmarks/run_matrix.py` in one run; threads "
        f"{first.config.get('threads')}, warm-up {first.config['warmup_s']} s, "
        f"{first.config['duration_s']} s per row; load average before the run "
        f"{env.get('load_average')}. Speed-up = PyTorch eager fp32 p50 / row p50.",
        "",
        "## Must show",
        "",
        "| model | measure | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    for s in shown:
        measured = (
            "-"
            if s.get("ratio") is None
            else (f"{s['ratio']:.2f} points" if "points" in s["what"] else f"{s['ratio']:.2f}x")
        )
        target = f"<= {s['target']}" if "points" in s["what"] else f">= {s['target']}x"
        lines.append(
            f"| {s['model']} | {s['what']} | {measured} | {target} | "
            f"{'yes' if s['met'] else '**no**'} |"
        )
    lines += [
        "",
        "## Batch 1 latency (p50) and accuracy",
        "",
        "| model | trained accuracy | backend | precision | p50 ms | speed-up vs eager | "
        "check accuracy | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        checks = {(c["artifact"], c["backend"]): c for c in m["check"]["checks"]}
        trained = fmt_pct(test_accuracy(m["run_dir"]))
        for row in sorted(m["result"].rows, key=lambda r: (r.kind != "baseline", r.backend)):
            if row.batch != 1:
                continue
            c = checks.get((row.artifact, row.backend)) if row.artifact else None
            acc = (c.get("comparison") or {}).get("accuracy_candidate") if c else None
            lines.append(
                f"| {name} | {trained} | {row.backend} | "
                f"{row.precision} | {fmt_ms(row.latency.p50)} | "
                f"{row.speedup_vs_eager:.2f}x | {fmt_pct(acc)} | "
                f"{c['status'] if c else '-'} |"
                if row.speedup_vs_eager is not None
                else f"| {name} | - | {row.backend} | {row.precision} | "
                f"{fmt_ms(row.latency.p50)} | - | - | - |"
            )
    lines += ["", "Per-model tables: " + ", ".join(f"[{n}]({n}.md)" for n in models) + "."]
    lines += ["", "![latency and throughput](latency.png)", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    from edgeport.runtime.envinfo import collect_environment
    from edgeport.runtime.io import atomic_write_json, atomic_write_text
    from edgeport.runtime.tools.report import write_plot

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in STANDARD_MODELS]
    if unknown:
        print(f"error: unknown models {unknown}; choose from {list(STANDARD_MODELS)}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    log.info("results go to %s; environment: %s", args.out, collect_environment()["cpu"])
    models = {name: run_model(name, args) for name in names}
    shown = must_show(models)
    write_plot([m["result"] for m in models.values()], args.out / "latency.png")
    atomic_write_text(args.out / "README.md", summary_markdown(models, shown))
    atomic_write_json(
        args.out / "matrix.json",
        {
            "schema": "edgeport.bench-matrix",
            "schema_version": 1,
            "must_show": shown,
            "trained_accuracy": {n: test_accuracy(m["run_dir"]) for n, m in models.items()},
            "int8_accuracy_lost_points": {
                n: int8_accuracy_lost(m["check"], BACKEND) for n, m in models.items()
            },
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "environment": next(iter(models.values()))["result"].environment,
        },
    )
    print()
    print(f"Must show ({args.out}):")
    for s in shown:
        value = "n/a" if s.get("ratio") is None else f"{s['ratio']:.2f}"
        print(
            f"  {s['model']:<14} {s['what']:<48} {value:>7}  target {s['target']}  "
            f"{'MET' if s['met'] else 'NOT MET'}"
        )
    print(json.dumps({s["model"] + " " + s["what"]: s.get("ratio") for s in shown}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
