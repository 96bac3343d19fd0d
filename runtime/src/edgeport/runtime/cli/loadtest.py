"""``edgeport loadtest URL``: load-test a model served with the Open Inference Protocol, over
HTTP or gRPC (:mod:`edgeport.runtime.tools.server_loadtest`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from edgeport.runtime.cli.bench_options import add_bench_inputs, add_report_files, print_written
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.feeds import parse_shapes, parse_value_ranges
from edgeport.runtime.io import check_writable
from edgeport.runtime.tools.server_loadtest import (
    LoadTestSettings,
    load_test,
    loadtest_markdown,
    write_loadtest,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "loadtest",
        help="load-test a served model (Open Inference Protocol, HTTP or gRPC)",
        description=(
            "Send requests to a model served with the Open Inference Protocol (edgeport serve, "
            "Triton, KServe): a closed loop at each --concurrency as perf_analyzer runs it, or "
            "Poisson arrivals at --qps points, or a search for the highest QPS whose p99 stays "
            "within --latency-bound-ms. Throughput, latency percentiles and errors per point."
        ),
    )
    parser.add_argument(
        "url",
        metavar="URL",
        help="http://HOST:PORT/v2/models/NAME (for gRPC, HOST:PORT is the gRPC port; "
        "grpc://... implies --protocol grpc)",
    )
    group = parser.add_argument_group("load")
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
    group.add_argument("--duration-s", type=float, default=3.0, help="seconds per point (3)")
    add_bench_inputs(parser, stored_reference=False)
    add_report_files(parser)
    parser.set_defaults(handler=run_load_test)


def _sweep(text: str) -> tuple[float, float, float]:
    try:
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--qps-sweep expects A:B:STEP, e.g. 10:100:10, got {text!r}") from None
    return start, stop, step


def load_test_settings(args: argparse.Namespace) -> LoadTestSettings:
    """The flags as :class:`LoadTestSettings` (each one checked there)."""
    if len(args.shapes) > 1:
        raise ConfigError("a load test sends one kind of request: give at most one --shapes")
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
    settings = load_test_settings(args)
    check_writable(args.json, args.markdown)
    result = load_test(settings)
    print(loadtest_markdown(result), end="")
    print_written(write_loadtest(result, json_path=args.json, markdown_path=args.markdown))
    failed = sum(p.sent - p.ok for p in result.points)
    if failed:
        print(f"warning: {failed} requests failed (see errors)", file=sys.stderr)
    return 0
