"""``edgeport bench MODEL``: latency and throughput of any model on every backend, per layer too."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeport.runtime.bundle import PRECISIONS
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
    ColdStartSettings,
    cold_start,
    coldstart_markdown,
    write_coldstart,
)
from edgeport.runtime.tools.loadgen import (
    SCENARIOS as LOADGEN_SCENARIOS,
)
from edgeport.runtime.tools.loadgen import (
    LoadGenSettings,
    loadgen_markdown,
    run_loadgen,
    write_loadgen,
)
from edgeport.runtime.tools.loadtest import (
    LoadTestSettings,
    load_test,
    loadtest_markdown,
    write_loadtest,
)
from edgeport.runtime.tools.profile import ProfileConfig
from edgeport.runtime.tools.report import bench_markdown, write_bench


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="benchmark latency/throughput of any model on every backend (and per layer)",
        description=(
            "Time MODEL (a bundle directory, an .onnx file or a TensorRT .engine/.plan) on every "
            "backend and precision this machine can run, and PyTorch baselines for bundles of "
            "edgeport-trained models, on the same inputs: warm-up, then repeated calls; mean, "
            "min, max, p50/p90/p95/p99 latency, throughput (samples/s), CV, parity against the "
            "bundle's stored reference, and the speed-up against PyTorch eager."
        ),
    )
    parser.add_argument(
        "model",
        type=Path,
        nargs="?",
        help="bundle directory, .onnx or .engine/.plan file (or --url of a served model)",
    )
    _add_load_test(parser)
    _add_cold_start(parser)
    _add_loadgen(parser)
    _add_selection(parser)
    _add_inputs(parser)
    _add_timing(parser)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile every ONNX Runtime/TensorRT row per layer, in a separate session",
    )
    parser.add_argument("--profile-runs", type=int, default=50, help="profiled runs (50)")
    parser.add_argument("--profile-top", type=int, default=15, help="layers shown (15)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity columns")
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    parser.add_argument("--csv", type=Path, help="write one CSV line per row")
    parser.add_argument("--markdown", type=Path, help="write a Markdown report")
    parser.add_argument("--plot", type=Path, help="write a PNG of latency/throughput per row")
    parser.set_defaults(handler=run)


def _add_load_test(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "load test of a served model (--url; with --duration-s, --inputs FILE.npz or "
        "synthetic, --shapes, --value-range, --seed, --json, --markdown)"
    )
    group.add_argument(
        "--url",
        help="a model served with the Open Inference Protocol: http://HOST:PORT/v2/models/NAME "
        "(for gRPC, HOST:PORT is the gRPC port; grpc://... implies --protocol grpc)",
    )
    group.add_argument(
        "--protocol", choices=("http", "grpc"), help="http or grpc (default: the URL's scheme)"
    )
    group.add_argument(
        "--concurrency",
        metavar="N[,N...]",
        help="closed loop, as perf_analyzer: N requests always in flight, one point per N",
    )
    group.add_argument("--qps", type=float, help="one point at this QPS (Poisson arrivals)")
    group.add_argument("--qps-sweep", metavar="A:B:STEP", help="points from A to B QPS by STEP")
    group.add_argument(
        "--latency-bound-ms",
        type=float,
        help="p99 bound: report the highest QPS under it (alone: search for it)",
    )


def _add_cold_start(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "cold start (--cold-start; with --backend, --precision, --threads, --json, --markdown)"
    )
    group.add_argument(
        "--cold-start",
        action="store_true",
        help="time whole fresh processes (start, import, load, first result, exit) and their "
        "memory per backend and auto, cold and warm caches, against bare ONNX Runtime and "
        "OpenVINO on the same file",
    )
    group.add_argument(
        "--cold-runs", type=int, default=5, help="processes per row (median; default 5)"
    )


def _add_loadgen(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "MLPerf LoadGen (--loadgen; with --backend, --precision, --threads, --batch, --inputs, "
        "--seed, --latency-bound-ms (Server's target latency), --json, --markdown; LoadGen's "
        "logs go to a loadgen/SCENARIO folder beside the JSON or Markdown, else ./loadgen)"
    )
    group.add_argument(
        "--loadgen",
        choices=tuple(LOADGEN_SCENARIOS),
        help="run the model under MLPerf's LoadGen in this scenario (MLPerf's durations: "
        "600 s minimum)",
    )
    group.add_argument(
        "--quick", action="store_true", help="stop LoadGen after about a second (INVALID)"
    )
    group.add_argument(
        "--target-qps", type=float, help="Server's scheduled QPS, Offline's expected QPS"
    )


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        help=f"comma-separated, from {', '.join(SELECTABLE_BACKENDS)} (default: all; auto is "
        'the model as load(backend="auto") opens it, per batch size)',
    )
    parser.add_argument(
        "--precision", help=f"comma-separated, from {', '.join(PRECISIONS)} (default: all)"
    )
    parser.add_argument(
        "--baseline",
        default="torch",
        help=f"comma-separated PyTorch baselines from {', '.join(BASELINES)}, or 'none' "
        "(default: torch; bundles of edgeport-trained models only)",
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="also time GPU backends with CUDA graphs"
    )
    parser.add_argument("--threads", type=int, help="CPU threads (ONNX Runtime and PyTorch)")


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shapes",
        action="append",
        default=[],
        metavar="NAME:DIMS,...",
        help="input shapes, e.g. x:1x3x224x224,ids:1x16; repeat for several rows (one each)",
    )
    parser.add_argument(
        "--batch",
        help="batch sizes, e.g. 1,8,32: axis 0 of the first input (and of every input with a "
        "dynamic axis 0); default 1,8,32 for image models with a card, else the model's shapes",
    )
    parser.add_argument(
        "--inputs",
        default="auto",
        metavar="auto|synthetic|reference|FILE.npz",
        help="auto (default): the bundle's stored reference inputs, else synthetic; or an .npz "
        "of one array per input",
    )
    parser.add_argument(
        "--images", nargs="+", metavar="PATH", help="image files or folders (models with a card)"
    )
    parser.add_argument(
        "--value-range",
        action="append",
        default=[],
        metavar="NAME:LO,HI",
        help="value range of a synthetic input, e.g. ids:0,999 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic inputs (0)")


def _add_timing(parser: argparse.ArgumentParser) -> None:
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
    if args.url is not None:
        return run_load_test(args)
    if args.model is not None and args.cold_start:
        return run_cold_start(args)
    if args.model is not None and args.loadgen:
        return run_loadgen_command(args)
    if args.model is None:
        raise ConfigError("give a MODEL to benchmark, or --url of a served model to load-test")
    check_writable(args.json, args.csv, args.markdown, args.plot)  # before minutes of timing
    result = benchmark(args.model, settings_from_args(args))
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


def _sweep(text: str) -> tuple[float, float, float]:
    try:
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--qps-sweep expects A:B:STEP, e.g. 10:100:10, got {text!r}") from None
    return start, stop, step


def load_test_settings(args: argparse.Namespace) -> LoadTestSettings:
    """The flags of a load test (``--url``) as :class:`LoadTestSettings`."""
    if args.model is not None:
        raise ConfigError("give a MODEL to benchmark or --url to load-test, not both")
    if args.inputs == "reference" or len(args.shapes) > 1:
        raise ConfigError(
            "a load test sends one kind of request: --inputs FILE.npz or synthetic, and at most "
            "one --shapes"
        )
    try:
        concurrency = tuple(int(c) for c in args.concurrency.split(",")) if args.concurrency else ()
    except ValueError:
        raise ConfigError(f"--concurrency expects N[,N...], got {args.concurrency!r}") from None
    return LoadTestSettings(
        url=args.url,
        protocol=args.protocol,
        concurrency=concurrency,
        qps=args.qps,
        qps_sweep=_sweep(args.qps_sweep) if args.qps_sweep else None,
        duration_s=args.duration_s,
        latency_bound_ms=args.latency_bound_ms,
        inputs=args.inputs,
        shapes=parse_shapes(args.shapes),
        value_ranges=parse_value_ranges(args.value_range),
        seed=args.seed,
    )


def run_load_test(args: argparse.Namespace) -> int:
    result = load_test(load_test_settings(args))
    print(loadtest_markdown(result), end="")
    written = write_loadtest(result, json_path=args.json, markdown_path=args.markdown)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    failed = sum(p.sent - p.ok for p in result.points)
    if failed:
        print(f"warning: {failed} requests failed (see errors)", file=sys.stderr)
    return 0


def _one_backend(args: argparse.Namespace) -> str:
    names = parse_list(args.backend, SELECTABLE_BACKENDS, "backends") or ("auto",)
    if len(names) > 1:
        raise ConfigError(f"--loadgen runs one backend, got {', '.join(names)}")
    return names[0]


def _one_precision(args: argparse.Namespace) -> str | None:
    names = parse_list(args.precision, PRECISIONS, "precisions") or (None,)
    if len(names) > 1:
        raise ConfigError(f"give one --precision here, got {', '.join(map(str, names))}")
    return names[0]


def run_cold_start(args: argparse.Namespace) -> int:
    from edgeport.runtime.tools.coldstart import SUBJECTS

    settings = ColdStartSettings(
        runs=args.cold_runs,
        subjects=parse_list(args.backend, SUBJECTS, "cold-start subjects") or (),
        threads=args.threads,
        precision=_one_precision(args),
    )
    result = cold_start(args.model, settings, progress=lambda m: print(m, file=sys.stderr))
    print(coldstart_markdown(result), end="")
    for path in write_coldstart(result, json_path=args.json, markdown_path=args.markdown):
        print(f"wrote {path}", file=sys.stderr)
    return 0 if result.rows else 1


def loadgen_log_dir(args: argparse.Namespace) -> Path:
    """LoadGen's logs: ``loadgen/SCENARIO`` beside the JSON (or Markdown), else in ./loadgen."""
    beside = args.json or args.markdown
    base = beside.parent if beside is not None else Path()
    return base / "loadgen" / args.loadgen


def run_loadgen_command(args: argparse.Namespace) -> int:
    settings = LoadGenSettings(
        scenario=args.loadgen,
        quick=args.quick,
        backend=_one_backend(args),
        precision=_one_precision(args),
        threads=args.threads,
        batch=max(parse_batches(args.batch)) if args.batch else 8,
        target_qps=args.target_qps,
        target_latency_ms=args.latency_bound_ms,
        inputs=args.inputs,
        seed=args.seed,
    )
    result = run_loadgen(
        args.model, settings, loadgen_log_dir(args), progress=lambda m: print(m, file=sys.stderr)
    )
    print(loadgen_markdown(result), end="")
    for path in write_loadgen(result, json_path=args.json, markdown_path=args.markdown):
        print(f"wrote {path}", file=sys.stderr)
    return 0
