"""``edgeport bench BUNDLE``: latency and throughput of every backend against PyTorch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeport.runtime.bundle import PRECISIONS
from edgeport.runtime.tools.bench import (
    BASELINES,
    RUNTIME_BACKENDS,
    SCENARIOS,
    TimingConfig,
    benchmark,
    parse_batches,
    parse_list,
)
from edgeport.runtime.tools.report import bench_markdown, write_bench


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark latency/throughput of every backend against PyTorch eager",
        description=(
            "Time every artifact of BUNDLE on every backend this machine can run, and PyTorch "
            "baselines, on the same real images: warm-up, then repeated calls; mean, min, max, "
            "p50/p90/p95/p99 latency, throughput, CV, and the speed-up against PyTorch eager."
        ),
    )
    parser.add_argument("bundle", type=Path, help="bundle directory (with manifest.json)")
    parser.add_argument(
        "--backend", help=f"comma-separated, from {', '.join(RUNTIME_BACKENDS)} (default: all)"
    )
    parser.add_argument(
        "--precision", help=f"comma-separated, from {', '.join(PRECISIONS)} (default: all)"
    )
    parser.add_argument("--batch", default="1,8,32", help="batch sizes (default 1,8,32)")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="both",
        help="single-stream: batch 1, p90 latency (MLPerf); offline: peak throughput over the "
        "batch sizes; both (default)",
    )
    parser.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds (1)")
    parser.add_argument("--duration-s", type=float, default=3.0, help="seconds per row (3)")
    parser.add_argument("--iterations", type=int, help="a fixed number of calls per row instead")
    parser.add_argument("--threads", type=int, help="CPU threads (ONNX Runtime and PyTorch)")
    parser.add_argument(
        "--baseline",
        default="torch",
        help=f"comma-separated PyTorch baselines from {', '.join(BASELINES)}, or 'none' "
        "(default: torch)",
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="also time GPU backends with CUDA graphs"
    )
    parser.add_argument("--no-parity", action="store_true", help="skip the parity columns")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--csv", type=Path, help="write one CSV line per row")
    parser.add_argument("--markdown", type=Path, help="write a Markdown report")
    parser.add_argument("--plot", type=Path, help="write a PNG of latency/throughput vs batch")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = TimingConfig(
        warmup_s=args.warmup_s, duration_s=args.duration_s, iterations=args.iterations
    )
    baselines = (
        ()
        if args.baseline.strip().lower() == "none"
        else parse_list(args.baseline, BASELINES, "baselines") or ()
    )
    result = benchmark(
        args.bundle,
        backends=parse_list(args.backend, RUNTIME_BACKENDS, "backends"),
        precisions=parse_list(args.precision, PRECISIONS, "precisions"),
        batches=parse_batches(args.batch),
        scenario=args.scenario,
        config=config,
        threads=args.threads,
        baselines=baselines,
        cuda_graph=args.cuda_graph,
        parity=not args.no_parity,
    )
    print(bench_markdown(result), end="")
    written = write_bench(
        result,
        json_path=args.json,
        csv_path=args.csv,
        markdown_path=args.markdown,
        plot_path=args.plot,
    )
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    if not result.rows:
        print(
            "error: nothing could be measured on this machine (see 'Not measured here')",
            file=sys.stderr,
        )
        return 1
    return 0
