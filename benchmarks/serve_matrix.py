"""Serving benchmark: the highest QPS whose p99 latency stays under a bound, served by
``edgeport serve`` (Ray Serve, Open Inference Protocol) with dynamic batching on and off.

The models: the seed's CNN (simple_cnn_bn-shaped, 3x32x32, built with the onnx helper API as in
``runtime_overhead.py``) and resnet18 (3x224x224, 10 classes, random weights, exported with
edgeport's own exporter, torch.onnx dynamo), both fp32 ONNX. For each model and batching mode
one Serve application runs on one local Ray cluster, and the load-test client
(``edgeport bench --url``: Poisson arrivals, open loop, binary tensors, batch 1 per request)
searches for the highest QPS whose p99 stays under the model's bound. Client and server share
this machine's CPUs: the numbers are what one box serves to itself, not a server's ceiling.

    python benchmarks/serve_matrix.py            # the real run (about 10 minutes on 2 cores)
    python benchmarks/serve_matrix.py --quick    # a short validation run into runs/
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_lib import repo_relative, resnet18_classifier_onnx
from runtime_overhead import build_small_cnn

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("edgeport.benchmarks")


@dataclass(frozen=True)
class ServedModel:
    name: str
    shape: str
    bound_ms: float


MODELS = {
    "simple_cnn_bn": ServedModel("simple_cnn_bn", "3x32x32", 50.0),
    "resnet18": ServedModel("resnet18", "3x224x224", 500.0),
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import cpu_counts, machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for validation")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--duration-s", type=float, help="seconds per QPS point (10; quick: 2)")
    parser.add_argument("--search-steps", type=int, help="bisection steps (4; quick: 2)")
    parser.add_argument(
        "--bounds",
        default=",".join(f"{m.name}:{m.bound_ms:g}" for m in MODELS.values()),
        help="p99 bound per model in ms, e.g. simple_cnn_bn:50,resnet18:500",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=cpu_counts()["usable"],
        help="ONNX Runtime threads of the one replica (default: the usable CPUs)",
    )
    parser.add_argument("--max-batch", type=int, default=8, help="batching on: samples (8)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="batching on: wait (2)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port of the server (8000)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results folder (default benchmarks/results/{machine_slug()}/serve; "
        "with --quick runs/serve-quick/<machine>)",
    )
    args = parser.parse_args(argv)
    args.duration_s = args.duration_s or (2.0 if args.quick else 10.0)
    args.search_steps = (
        args.search_steps if args.search_steps is not None else (2 if args.quick else 4)
    )
    if args.out is None:
        quick = REPO / "runs" / "serve-quick" / machine_slug()
        args.out = (
            quick if args.quick else REPO / "benchmarks" / "results" / machine_slug() / "serve"
        )
    return args


def build_resnet18(path: Path) -> Path:
    """torchvision resnet18 with random weights and 10 classes, exported by edgeport-export."""
    return resnet18_classifier_onnx(path, opt_batch=8, class_names=[str(i) for i in range(10)])


def build(name: str, folder: Path) -> Path:
    started = time.perf_counter()
    path = folder / f"{name}.onnx"
    if name == "simple_cnn_bn":
        build_small_cnn(path)
    else:
        build_resnet18(path)
    log.info("built %s in %.1f s", path.name, time.perf_counter() - started)
    return path


def measure(
    path: Path, model: ServedModel, batching: bool, args: argparse.Namespace
) -> dict[str, Any]:
    """Serve ``path`` (one replica) and search the highest QPS under the model's bound."""
    from edgeport.runtime.serve.launch import serve_models, stop
    from edgeport.runtime.serve.settings import ModelSettings, ServeSettings
    from edgeport.runtime.tools.loadtest import LoadTestSettings, load_test

    max_batch = args.max_batch if batching else 1
    settings = ServeSettings(
        (
            ModelSettings(
                path,
                name=model.name,
                threads=args.threads,
                max_batch=max_batch,
                batch_wait_ms=args.batch_wait_ms,
                max_queued_requests=-1,  # the latency bound judges overload, not 503s
                access_log=False,
            ),
        ),
        port=args.port,
    )
    served = serve_models(settings)
    try:
        result = load_test(
            LoadTestSettings(
                url=served.model_url(model.name),
                latency_bound_ms=model.bound_ms,
                duration_s=args.duration_s,
                search_steps=args.search_steps,
            )
        )
    finally:
        stop(served)
    best = result.best_qps
    at_best = next((p for p in result.points if p.target_qps == best), None)
    return {
        "model": model.name,
        "input": model.shape,
        "batching": batching,
        "max_batch": max_batch,
        "batch_wait_ms": args.batch_wait_ms if batching else None,
        "bound_ms": model.bound_ms,
        "best_qps": best,
        "at_best": at_best.to_dict() if at_best else None,
        "points": [p.to_dict() for p in result.points],
    }


def _cells(row: dict[str, Any]) -> list[str]:
    best, stats = row["best_qps"], (row["at_best"] or {}).get("latency_ms")
    batching = "off"
    if row["batching"]:
        batching = f"on (max {row['max_batch']}, {row['batch_wait_ms']:g} ms)"
    return [
        row["model"],
        row["input"],
        batching,
        f"{row['bound_ms']:g} ms",
        "none" if best is None else f"{best:.1f}",
        "-" if not stats else f"{stats['p50']:.2f}",
        "-" if not stats else f"{stats['p99']:.2f}",
        str(len(row["points"])),
    ]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Serving: highest QPS with p99 under a bound (edgeport serve, Ray Serve, OIP)",
        "",
        f"One replica, {args.threads} ONNX Runtime threads, fp32, batch 1 per request, binary "
        f"tensors; Poisson arrivals (open loop), {args.duration_s:g} s per point, search: "
        f"doubling then {args.search_steps} bisection steps. The client runs on the same CPUs.",
        "",
        "| model | input | dynamic batching | p99 bound | max QPS | p50 ms | p99 ms | points |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    from edgeport.runtime.envinfo import collect_environment
    from edgeport.runtime.io import atomic_write_json, atomic_write_text
    from edgeport.runtime.serve.launch import Served, start_cluster, stop
    from edgeport.runtime.serve.settings import ModelSettings, ServeSettings

    bounds = {name: float(ms) for name, ms in (b.split(":") for b in args.bounds.split(","))}
    models = [
        ServedModel(n, MODELS[n].shape, bounds.get(n, MODELS[n].bound_ms))
        for n in args.models.split(",")
    ]
    with tempfile.TemporaryDirectory(prefix="serve-matrix-") as tmp:
        paths = {m.name: build(m.name, Path(tmp)) for m in models}
        # one local cluster for every row; each row adds its application and removes it
        cluster = ServeSettings(
            (ModelSettings(paths[models[0].name]),), port=args.port, num_cpus=args.threads
        )
        start_cluster(cluster)
        try:
            rows = [measure(paths[m.name], m, b, args) for m in models for b in (True, False)]
        finally:
            stop(Served(cluster, cluster.url, None, started_cluster=True))
    report = {
        "schema": "edgeport.serve_matrix",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            k: repo_relative(v) if isinstance(v, Path) else v for k, v in vars(args).items()
        },
        "environment": collect_environment(threads=args.threads),
        "rows": rows,
    }
    atomic_write_json(args.out / "serve_matrix.json", report)
    atomic_write_text(args.out / "serve_matrix.md", markdown(rows, args))
    print(markdown(rows, args))
    print(f"wrote {args.out}/serve_matrix.json and serve_matrix.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
