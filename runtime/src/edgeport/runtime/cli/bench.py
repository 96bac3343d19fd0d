"""``edgeport bench MODEL``: latency and throughput of any model on every backend, per layer too;
``edgeport bench cold-start MODEL``: whole fresh processes; ``edgeport bench loadgen MODEL``:
MLPerf's LoadGen drives the model. The three share their argument groups
(:mod:`edgeport.runtime.cli.bench_options`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeport.runtime.bundle import PRECISIONS
from edgeport.runtime.cli import CommandParser
from edgeport.runtime.cli.bench_options import (
    add_bench_inputs,
    add_model_argument,
    add_report_files,
    add_target,
    print_written,
)
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.feeds import parse_shapes, parse_value_ranges
from edgeport.runtime.io import check_writable
from edgeport.runtime.tools.bench import (
    BASELINES,
    SCENARIOS,
    SELECTABLE_BACKENDS,
    BenchSettings,
    TimingConfig,
    benchmark,
    parse_batches,
    parse_list,
)
from edgeport.runtime.tools.coldstart import (
    SUBJECTS,
    ColdStartSettings,
    cold_start,
    coldstart_markdown,
    write_coldstart,
)
from edgeport.runtime.tools.mlperf_loadgen import SCENARIOS as LOADGEN_SCENARIOS
from edgeport.runtime.tools.mlperf_loadgen import (
    LoadGenSettings,
    loadgen_markdown,
    run_loadgen,
    write_loadgen,
)
from edgeport.runtime.tools.profile import ProfileConfig
from edgeport.runtime.tools.report import bench_markdown, write_bench


def register(subparsers: Any) -> None:
    parser: CommandParser = subparsers.add_parser(
        "bench",
        help="benchmark any model on every backend (and per layer, cold, under MLPerf LoadGen)",
        description=(
            "Time MODEL (a bundle directory, an .onnx file or a TensorRT .engine/.plan) on every "
            "backend and precision this machine can run, and PyTorch baselines for bundles of "
            "edgeport-trained models, on the same inputs: warm-up, then repeated calls; mean, "
            "min, max, p50/p90/p95/p99 latency, throughput (samples/s), CV, parity against the "
            "bundle's stored reference, and the speed-up against PyTorch eager. A served model "
            "is load-tested by 'edgeport loadtest URL'."
        ),
    )
    add_model_argument(parser)
    add_target(
        parser,
        backends=f"comma-separated, from {', '.join(SELECTABLE_BACKENDS)} (default: all; auto "
        'is the model as load(backend="auto") opens it, per batch size)',
        precisions=f"comma-separated, from {', '.join(PRECISIONS)} (default: all)",
    )
    group = parser.add_argument_group("baselines")
    group.add_argument(
        "--baseline",
        default="torch",
        help=f"comma-separated PyTorch baselines from {', '.join(BASELINES)}, or 'none' "
        "(default: torch; bundles of edgeport-trained models only)",
    )
    group.add_argument(
        "--cuda-graph", action="store_true", help="also time GPU backends with CUDA graphs"
    )
    inputs = add_bench_inputs(parser, several_shapes=True)
    inputs.add_argument(
        "--batch",
        help="batch sizes, e.g. 1,8,32: axis 0 of the first input (and of every input with a "
        "dynamic axis 0); default 1,8,32 for image models with a card, else the model's shapes",
    )
    inputs.add_argument(
        "--images", nargs="+", metavar="PATH", help="image files or folders (models with a card)"
    )
    _add_timing(parser)
    group = parser.add_argument_group("per layer and parity")
    group.add_argument(
        "--profile",
        action="store_true",
        help="also profile every ONNX Runtime/TensorRT row per layer, in a separate session",
    )
    group.add_argument("--profile-runs", type=int, default=50, help="profiled runs (50)")
    group.add_argument("--profile-top", type=int, default=15, help="layers shown (15)")
    group.add_argument("--no-parity", action="store_true", help="skip the parity columns")
    files = add_report_files(parser)
    files.add_argument("--csv", type=Path, help="write one CSV line per row")
    files.add_argument("--plot", type=Path, help="write a PNG of latency/throughput per row")
    parser.set_defaults(handler=run)
    _register_cold_start(parser)
    _register_loadgen(parser)


def _add_timing(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("timing")
    group.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="both",
        help="single-stream: batch 1, p90 latency (MLPerf); offline: peak throughput over the "
        "batch sizes; both (default)",
    )
    group.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds (1)")
    group.add_argument("--duration-s", type=float, default=3.0, help="seconds per row (3)")
    group.add_argument("--iterations", type=int, help="a fixed number of calls per row instead")


def _register_cold_start(bench: CommandParser) -> None:
    parser = bench.add_mode(
        "cold-start",
        help="whole fresh processes: start, import, load, first result; memory",
        description=(
            "Time whole fresh processes (start, import, load, first result, exit) that run MODEL "
            "and their memory, per backend and auto, with cold and warm caches, against bare "
            "ONNX Runtime and OpenVINO on the same file."
        ),
    )
    add_model_argument(parser)
    add_target(
        parser,
        backends=f"comma-separated, from {', '.join(SUBJECTS)} (default: all that run here)",
        precisions="one of " + ", ".join(PRECISIONS) + " (default: the one auto chooses)",
    )
    parser.add_argument("--runs", type=int, default=5, help="processes per row (median; 5)")
    add_report_files(parser)
    parser.set_defaults(handler=run_cold_start)


def _register_loadgen(bench: CommandParser) -> None:
    parser = bench.add_mode(
        "loadgen",
        help="MLPerf's own LoadGen drives the model in one of its scenarios",
        description=(
            "Run MODEL under MLPerf Inference's LoadGen (mlcommons-loadgen) in one scenario, "
            "with MLPerf's durations (600 s minimum) unless --quick. LoadGen's logs go to a "
            "loadgen/SCENARIO folder beside the JSON or Markdown, else to ./loadgen."
        ),
    )
    add_model_argument(parser)
    parser.add_argument(
        "--scenario", required=True, choices=tuple(LOADGEN_SCENARIOS), help="MLPerf's scenario"
    )
    add_target(
        parser,
        backends=f"one of {', '.join(SELECTABLE_BACKENDS)} (default: auto)",
        precisions="one of " + ", ".join(PRECISIONS) + " (default: the one auto chooses)",
    )
    inputs = add_bench_inputs(parser, synthetic_shapes=False)
    inputs.add_argument("--batch", type=int, default=8, help="most samples per model call (8)")
    group = parser.add_argument_group("LoadGen")
    group.add_argument(
        "--quick", action="store_true", help="stop LoadGen after about a second (INVALID)"
    )
    group.add_argument(
        "--target-qps", type=float, help="Server's scheduled QPS, Offline's expected QPS"
    )
    group.add_argument(
        "--target-latency-ms",
        type=float,
        help="Server's bound on the 99th percentile (default: LoadGen's mlperf.conf)",
    )
    add_report_files(parser)
    parser.set_defaults(handler=run_loadgen_command)


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    """The flags as :class:`BenchSettings` (each one checked there)."""
    baselines = (
        ()
        if args.baseline.strip().lower() == "none"
        else parse_list(args.baseline, BASELINES, "baselines") or ()
    )
    profile = None
    if args.profile:
        profile = ProfileConfig(runs=args.profile_runs, top=args.profile_top)
    return BenchSettings(
        backends=parse_list(args.backend, SELECTABLE_BACKENDS, "backends") or (),
        precisions=parse_list(args.precision, PRECISIONS, "precisions") or (),
        batches=parse_batches(args.batch) if args.batch else (),
        shapes=tuple(parse_shapes(text) for text in args.shapes),
        scenario=args.scenario,
        timing=TimingConfig(
            warmup_s=args.warmup_s, duration_s=args.duration_s, iterations=args.iterations
        ),
        threads=args.threads,
        baselines=baselines,
        cuda_graph=args.cuda_graph,
        parity=not args.no_parity,
        inputs=args.inputs,
        images=tuple(args.images or ()),
        value_ranges=parse_value_ranges(args.value_range),
        seed=args.seed,
        profile=profile,
    )


def run(args: argparse.Namespace) -> int:
    check_writable(args.json, args.csv, args.markdown, args.plot)  # before minutes of timing
    result = benchmark(args.model, settings_from_args(args))
    print(bench_markdown(result), end="")
    print_written(
        write_bench(
            result,
            json_path=args.json,
            csv_path=args.csv,
            markdown_path=args.markdown,
            plot_path=args.plot,
        )
    )
    if not result.rows:
        print(
            "error: nothing could be measured on this machine (see 'Not measured here')",
            file=sys.stderr,
        )
        return 1
    return 0


def _one(text: str | None, choices: Sequence[str], what: str) -> str | None:
    names = parse_list(text, choices, what) or (None,)
    if len(names) > 1:
        raise ConfigError(f"give one --{what} here, got {', '.join(map(str, names))}")
    return names[0]


def run_cold_start(args: argparse.Namespace) -> int:
    settings = ColdStartSettings(
        runs=args.runs,
        subjects=parse_list(args.backend, SUBJECTS, "backend") or (),
        threads=args.threads,
        precision=_one(args.precision, PRECISIONS, "precision"),
    )
    check_writable(args.json, args.markdown)
    result = cold_start(args.model, settings, progress=lambda m: print(m, file=sys.stderr))
    print(coldstart_markdown(result), end="")
    print_written(write_coldstart(result, json_path=args.json, markdown_path=args.markdown))
    return 0 if result.rows else 1


def loadgen_log_dir(args: argparse.Namespace) -> Path:
    """LoadGen's logs: ``loadgen/SCENARIO`` beside the JSON (or Markdown), else in ./loadgen."""
    beside = args.json or args.markdown
    base = beside.parent if beside is not None else Path()
    return base / "loadgen" / args.scenario


def run_loadgen_command(args: argparse.Namespace) -> int:
    settings = LoadGenSettings(
        scenario=args.scenario,
        quick=args.quick,
        backend=_one(args.backend, SELECTABLE_BACKENDS, "backend") or "auto",
        precision=_one(args.precision, PRECISIONS, "precision"),
        threads=args.threads,
        batch=args.batch,
        target_qps=args.target_qps,
        target_latency_ms=args.target_latency_ms,
        inputs=args.inputs,
        seed=args.seed,
    )
    check_writable(args.json, args.markdown)
    result = run_loadgen(
        args.model, settings, loadgen_log_dir(args), progress=lambda m: print(m, file=sys.stderr)
    )
    print(loadgen_markdown(result), end="")
    print_written(write_loadgen(result, json_path=args.json, markdown_path=args.markdown))
    return 0
