"""``edgeport tune BUNDLE``: measure which backend and precision is fastest here, for ``auto``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeport.runtime.tools.timing import TimingConfig
from edgeport.runtime.tools.tune import TuneSettings, summary_lines, tune
from edgeport.runtime.tuning_records import check_record_writable, save_record


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="measure the fastest backend x precision of a bundle here; auto then uses it",
        description=(
            "Time every backend and precision of BUNDLE that can run on this machine (and passed "
            "its export parity check) at each batch size, and record the fastest with the "
            "numbers, this machine's fingerprint and the library versions. load(backend='auto') "
            "and every command's auto choice use the record while it holds here."
        ),
    )
    parser.add_argument("bundle", type=Path, help="bundle directory")
    parser.add_argument("--batch", default="1,8", help="batch sizes to tune for (1,8)")
    parser.add_argument("--threads", type=int, help="CPU threads (the record holds for these)")
    parser.add_argument("--backend", help="comma-separated backends to consider (default: all)")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="warm-up seconds (0.5)")
    parser.add_argument(
        "--duration-s", type=float, default=2.0, help="seconds per candidate and batch size (2)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds sharing those seconds (5)"
    )
    parser.add_argument(
        "--in-bundle",
        action="store_true",
        help="write BUNDLE/tuning.json instead of the user's cache (ships with the bundle)",
    )
    parser.set_defaults(handler=run_tune)


def run_tune(args: argparse.Namespace) -> int:
    settings = TuneSettings(
        batches=tuple(int(b) for b in args.batch.split(",") if b.strip()),
        threads=args.threads,
        timing=TimingConfig(warmup_s=args.warmup_s, duration_s=args.duration_s),
        rounds=args.rounds,
        backends=tuple(b.strip() for b in (args.backend or "").split(",") if b.strip()),
    )
    check_record_writable(args.bundle, in_bundle=args.in_bundle)  # before the timing
    record, left_out = tune(args.bundle, settings)
    path = save_record(record, args.bundle, in_bundle=args.in_bundle)
    print("\n".join(summary_lines(record)))
    for line in left_out:
        print(f"not timed: {line}", file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return 0
