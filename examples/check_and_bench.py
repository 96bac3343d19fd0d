"""Check a model against its reference on every backend here, then time it side by side.

    python examples/check_and_bench.py bundles/digits
    python examples/check_and_bench.py model.onnx --batch 1,8 --duration-s 2

The same as ``edgeport check MODEL`` and ``edgeport bench MODEL``, from Python. A bundle is
judged against PyTorch (when torch and the training package are installed) or the outputs stored
at export; a bare ONNX file against ONNX Runtime CPU fp32.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeport.runtime.tools.bench import BenchSettings, benchmark
from edgeport.runtime.tools.check import check
from edgeport.runtime.tools.timing import TimingConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a bundle directory, .onnx or engine file")
    parser.add_argument("--batch", default="1", help="batch sizes to time, e.g. 1,8")
    parser.add_argument("--duration-s", type=float, default=1.0, help="seconds per row")
    args = parser.parse_args(argv)

    report = check(args.model)
    for verdict in report.checks:  # one per (artifact, backend), skipped ones with the reason
        print(verdict.message())
    print(report.verdict)

    settings = BenchSettings(
        batches=tuple(int(b) for b in args.batch.split(",")),
        baselines=(),  # no PyTorch rows: the engines only
        timing=TimingConfig(warmup_s=0.2, duration_s=args.duration_s),
    )
    result = benchmark(args.model, settings)
    print(f"{'row':<34} {'batch':>5} {'p50 ms':>9} {'p99 ms':>9} {'samples/s':>10}")
    for row in result.rows:
        p50, p99 = row.latency.p50, row.latency.p99
        print(f"{row.label:<34} {row.batch:>5} {p50:>9.3f} {p99:>9.3f} {row.throughput:>10.1f}")
    for skipped in result.skipped:
        print(f"skipped {skipped.backend} {skipped.precision or ''}: {skipped.reason}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
