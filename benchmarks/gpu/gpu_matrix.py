"""The GPU benchmark matrix, run by ``benchmarks/gpu/run.sh`` on a machine with an NVIDIA GPU.

For simple_cnn_bn (3x32x32) and resnet18 (3x224x224), trained on the GPU on the embedded digits
and exported to ONNX fp32/fp16 (and TensorRT engines when ``tensorrt`` is importable), at batch
1, 8 and 32, in one process, on the same inputs:

- PyTorch eager fp32/fp16, CUDA-graph replay fp32/fp16, torch.compile fp32 (baselines);
- edgeport ``onnxruntime-cuda`` (IOBinding), then with CUDA graphs; ``tensorrt`` engines;
- the same ONNX files on ORT CUDA timed stage by stage (``staged_ort.py``): H2D, compute, D2H.

Every candidate's logits are compared with the bundle's stored PyTorch fp32 CPU logits (top-1
agreement, max abs error). Writes gpu.json, gpu.md, gpu.csv, gpu.png and env.json to ``--out``.

``--dry-run`` runs the same code on the CPU (onnxruntime-cpu, eager PyTorch, tiny settings):
it exercises everything except CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/ for matrix_lib
sys.path.insert(0, str(HERE))

import staged_ort  # noqa: E402 - after the sys.path set-up
from matrix_lib import MatrixModel, export_bundle, test_accuracy, timed, train_model  # noqa: E402

log = logging.getLogger("edgeport.benchmarks")

PRECISIONS = ("fp32", "fp16")
# On a GPU, training end to end is seconds: no frozen backbone needed.
GPU_MODELS = {
    "simple_cnn_bn": MatrixModel("simple_cnn_bn", (32, 32), epochs=8, quick_epochs=1),
    "resnet18": MatrixModel(
        "resnet18", (224, 224), epochs=3, quick_epochs=1, batch_size=64, lr=1e-3
    ),
}
GOAL_SPEEDUP = 5.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/gpu-work"))
    parser.add_argument("--dry-run", action="store_true", help="CPU only, tiny settings")
    parser.add_argument("--models", default="resnet18,simple_cnn_bn")  # headline first
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--warmup-s", type=float, default=0.25)
    parser.add_argument("--duration-s", type=float, default=0.75)
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=330.0,
        help="stop starting new work after this many seconds (torch.compile is dropped first)",
    )
    parser.add_argument("--parity-limit", type=int, default=128, help="export gate images")
    return parser.parse_args(argv)


def gpu_facts() -> dict[str, Any]:
    """What torch and onnxruntime see of the GPU (versions, providers, CUDA, cuDNN)."""
    facts: dict[str, Any] = {}
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_cuda"] = torch.version.cuda
        facts["cudnn"] = torch.backends.cudnn.version() if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            facts["device"] = {
                "name": props.name,
                "capability": f"{props.major}.{props.minor}",
                "multiprocessors": props.multi_processor_count,
                "memory_gib": round(props.total_memory / 2**30, 1),
            }
    except ImportError as exc:
        facts["torch_error"] = str(exc)
    try:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
        facts["onnxruntime_file"] = onnxruntime.__file__
        facts["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError as exc:
        facts["onnxruntime_error"] = str(exc)
    facts["tensorrt"] = importlib.util.find_spec("tensorrt") is not None
    return facts


def headline(results: dict[str, Any]) -> dict[str, Any] | None:
    """resnet18 at batch 1: the best edgeport GPU path against PyTorch eager fp32, same run."""
    result = results.get("resnet18")
    if result is None:
        return None
    eager = result.find("torch", "fp32", 1, device="cuda")
    paths = [r for r in result.rows if r.kind == "edgeport" and r.device == "cuda" and r.batch == 1]
    if eager is None or not paths:
        return {"eager_fp32_p50_ms": eager.latency.p50 if eager else None, "best": None}
    best = min(paths, key=lambda r: r.latency.p50)
    return {
        "model": "resnet18",
        "batch": 1,
        "eager_fp32_p50_ms": eager.latency.p50,
        "best": f"{best.label} ({best.timer})",
        "best_p50_ms": best.latency.p50,
        "speedup": eager.latency.p50 / best.latency.p50,
        "goal": GOAL_SPEEDUP,
        "best_parity_top1": best.parity_top1,
        "best_parity_max_abs": best.parity_max_abs,
    }


def run_model(
    name: str, args: argparse.Namespace, started: float, errors: list[str]
) -> tuple[Any, dict[str, Any]]:
    from edgeport.runtime.tools.bench import BenchSettings, TimingConfig, benchmark, parse_batches

    spec = GPU_MODELS[name]
    device = "cpu" if args.dry_run else "cuda"
    run_dir = train_model(spec, args.work, quick=args.dry_run, reuse=False, device=device)
    trt = not args.dry_run and importlib.util.find_spec("tensorrt") is not None
    bundle = export_bundle(
        run_dir,
        args.work / name / "bundle",
        precisions=PRECISIONS,
        reuse=False,
        parity_limit=args.parity_limit,
        tensorrt=trt,
    )
    left = args.deadline_s - (time.perf_counter() - started)
    baselines: tuple[str, ...] = ("torch",)
    if not args.dry_run:
        baselines = ("torch", "torch-cuda-graph")
        if left > 150:
            baselines += ("torch-compile",)
        else:
            errors.append(f"{name}: torch.compile dropped, {left:.0f} s left before the deadline")
    backends = ("onnxruntime-cpu",) if args.dry_run else ("onnxruntime-cuda", "tensorrt")
    extra = [] if args.dry_run else staged_ort.plans(bundle, PRECISIONS)
    with timed(f"benchmarking {name}"):
        settings = BenchSettings(
            backends=backends,
            precisions=PRECISIONS,
            batches=parse_batches(args.batches),
            timing=TimingConfig(warmup_s=args.warmup_s, duration_s=args.duration_s),
            baselines=baselines,
            cuda_graph=not args.dry_run,
            compile_precisions=("fp32",),
        )
        result = benchmark(bundle, settings, extra_plans=extra)
    return result, {"trained_accuracy": test_accuracy(run_dir), "bundle": str(bundle)}


def write_outputs(
    out: Path, results: dict[str, Any], info: dict[str, Any], errors: list[str], facts: dict
) -> None:
    from edgeport.runtime.io import atomic_write_json, atomic_write_text
    from edgeport.runtime.tools.formatting import fmt_ms
    from edgeport.runtime.tools.report import bench_csv, bench_markdown, write_plot

    head = headline(results)
    atomic_write_json(
        out / "gpu.json",
        {
            "schema": "edgeport.gpu-matrix",
            "schema_version": 1,
            "headline": head,
            "models": {n: {**info[n], "bench": r.to_dict()} for n, r in results.items()},
            "gpu": facts,
            "errors": errors,
        },
    )
    csv_lines: list[str] = []
    for name, result in results.items():
        lines = bench_csv(result).splitlines()
        if not csv_lines:
            csv_lines.append("model," + lines[0])
        csv_lines += [f"{name},{line}" for line in lines[1:]]
    atomic_write_text(out / "gpu.csv", "\n".join(csv_lines) + "\n")
    device = (facts.get("device") or {}).get("name", "CPU (dry run)")
    md = [f"# GPU benchmark matrix: {device}", ""]
    if head and head.get("best"):
        md += [
            f"**resnet18, batch 1: {head['best']} at {fmt_ms(head['best_p50_ms'])} ms vs PyTorch "
            f"eager fp32 {fmt_ms(head['eager_fp32_p50_ms'])} ms = {head['speedup']:.2f}x** "
            f"(goal {GOAL_SPEEDUP:g}x), measured in the same run.",
            "",
        ]
    md.append(f"GPU software: {json.dumps(facts)}")
    for name, result in results.items():
        acc = info[name].get("trained_accuracy")
        title = f"{name} (trained accuracy {acc:.2%})" if acc is not None else name
        md += ["", bench_markdown(result, title=title, level=2)]
    if errors:
        md += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    atomic_write_text(out / "gpu.md", "\n".join(md) + "\n")
    if results:
        write_plot(list(results.values()), out / "gpu.png", title=f"edgeport bench on {device}")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    for noisy in ("onnxscript", "onnx_ir", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    from edgeport.runtime.envinfo import collect_environment
    from edgeport.runtime.io import atomic_write_json

    facts = gpu_facts()
    atomic_write_json(args.out / "env.json", {**collect_environment(), "gpu_software": facts})
    log.info("GPU software: %s", facts)
    results: dict[str, Any] = {}
    info: dict[str, Any] = {}
    errors: list[str] = []
    for name in [n.strip() for n in args.models.split(",") if n.strip()]:
        if time.perf_counter() - started > args.deadline_s:
            errors.append(f"{name}: not run, the {args.deadline_s:.0f} s deadline passed")
            continue
        try:
            results[name], info[name] = run_model(name, args, started, errors)
        except Exception as exc:  # the driver records any failure and goes on to the next model
            log.exception("%s failed", name)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        write_outputs(args.out, results, info, errors, facts)  # partial results survive a kill
    write_outputs(args.out, results, info, errors, facts)
    head = headline(results)
    print("\n=== GPU matrix summary ===")
    for name, result in results.items():
        for r in sorted(result.rows, key=lambda r: (r.batch, r.latency.p50)):
            if r.batch == 1:
                stages = r.stages or {}
                split = "/".join(
                    f"{stages[s].p50:.3f}" for s in ("h2d", "compute", "d2h") if s in stages
                )
                print(
                    f"{name:<14} b1 {r.label:<38} p50 {r.latency.p50:8.3f} ms "
                    f"p99 {r.latency.p99:8.3f}  x{r.speedup_vs_eager or 0:5.2f}  "
                    f"top1 {r.parity_top1 if r.parity_top1 is not None else '-'}  "
                    f"maxabs {r.parity_max_abs if r.parity_max_abs is not None else '-'}  {split}"
                )
    print(f"headline: {json.dumps(head)}")
    for e in errors:
        print(f"error: {e}")
    return 0 if results and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
