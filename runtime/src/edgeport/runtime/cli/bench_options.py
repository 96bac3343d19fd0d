"""Argument groups that ``edgeport bench``, its modes and ``edgeport loadtest`` share (this
module is not a command): the model, what to run it on, its inputs and the report files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", type=Path, metavar="MODEL", help="bundle directory, .onnx or .engine/.plan file"
    )


def add_target(parser: argparse.ArgumentParser, *, backends: str, precisions: str) -> None:
    """``--backend``, ``--precision`` and ``--threads``; the help says how many of each."""
    group = parser.add_argument_group("backends and precisions")
    group.add_argument("--backend", help=backends)
    group.add_argument("--precision", help=precisions)
    group.add_argument("--threads", type=int, help="CPU threads (ONNX Runtime and PyTorch)")


def add_bench_inputs(
    parser: argparse.ArgumentParser,
    *,
    several_shapes: bool = False,
    synthetic_shapes: bool = True,
    stored_reference: bool = True,
) -> argparse._ArgumentGroup:
    """``--inputs``, ``--seed`` and, with ``synthetic_shapes``, ``--shapes`` (repeatable for a
    row each with ``several_shapes``) and ``--value-range``. The group, for more."""
    group = parser.add_argument_group("inputs")
    if stored_reference:
        group.add_argument(
            "--inputs",
            default="auto",
            metavar="auto|synthetic|reference|FILE.npz",
            help="auto (default): the bundle's stored reference inputs, else synthetic; or an "
            ".npz of one array per input",
        )
    else:
        group.add_argument(
            "--inputs",
            default="synthetic",
            metavar="synthetic|FILE.npz",
            help="seeded synthetic inputs (default) or an .npz of one array per input",
        )
    if synthetic_shapes:
        group.add_argument(
            "--shapes",
            action="append",
            default=[],
            metavar="NAME:DIMS,...",
            help="input shapes, e.g. x:1x3x224x224,ids:1x16"
            + ("; repeat for several rows (one each)" if several_shapes else ""),
        )
        group.add_argument(
            "--value-range",
            action="append",
            default=[],
            metavar="NAME:LO,HI",
            help="value range of a synthetic input, e.g. ids:0,999 (repeatable)",
        )
    group.add_argument("--seed", type=int, default=0, help="seed of synthetic inputs (0)")
    return group


def add_report_files(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """``--json`` and ``--markdown``. The group, for more."""
    group = parser.add_argument_group("report files")
    group.add_argument("--json", type=Path, help="write the results as JSON")
    group.add_argument("--markdown", type=Path, help="write a Markdown report")
    return group


def print_written(paths: Iterable[Path]) -> None:
    for path in paths:
        print(f"wrote {path}", file=sys.stderr)
