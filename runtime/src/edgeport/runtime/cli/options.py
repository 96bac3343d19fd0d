"""Command-line options that several commands share: the inputs of any model (not a command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeport.runtime.feeds import parse_shapes, parse_value_ranges
from edgeport.runtime.specs import TensorSpec


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """``--inputs``, ``--shapes``, ``--value-range`` and ``--seed``."""
    parser.add_argument(
        "--inputs",
        type=Path,
        help="an .npz file with one array per model input, named as the input "
        "(np.savez(path, **{name: array})); default: seeded synthetic inputs",
    )
    parser.add_argument(
        "--shapes",
        action="append",
        default=[],
        metavar="NAME:DIMS",
        help="shapes of synthetic inputs, e.g. input:1x3x224x224,ids:1x16 (default: fixed "
        "dimensions as they are, dynamic ones at their range's opt, else 1)",
    )
    parser.add_argument(
        "--value-range",
        action="append",
        default=[],
        metavar="NAME:LOW,HIGH",
        help="values of a synthetic input, e.g. ids:0,999 (repeatable; default: the declared "
        "range, else standard-normal floats and integers in [0, 1])",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of synthetic inputs (0)")


def parsed_inputs(
    args: argparse.Namespace,
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[float, float]]]:
    """The ``--shapes`` and ``--value-range`` given, parsed."""
    return parse_shapes(args.shapes), parse_value_ranges(args.value_range)


def spec_lines(kind: str, specs: tuple[TensorSpec, ...] | list[TensorSpec]) -> list[str]:
    """``input ids: int64 [batch, seq] (batch 1..32, seq 1..128)`` for each spec."""
    return [f"{kind} {spec.describe()}" for spec in specs]
