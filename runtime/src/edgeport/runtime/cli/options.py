"""Command-line options that several commands share (this module is not a command): how to
load a model, and the inputs of any model."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeport.runtime.backends.registry import BackendNames
from edgeport.runtime.bundle import PRECISIONS
from edgeport.runtime.feeds import parse_shapes, parse_value_ranges
from edgeport.runtime.loader import load
from edgeport.runtime.model import Model


def add_load_options(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--precision``, ``--device``, ``--threads`` and ``--allow-failed`` (see
    :func:`load_model`)."""
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BackendNames(with_auto=True),  # read when parsing: registered backends too
        help="default: auto",
    )
    parser.add_argument(
        "--precision", default=None, choices=PRECISIONS, help="default: the fastest that passed"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: any)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")
    parser.add_argument(
        "--allow-failed",
        action="store_true",
        help="run the artifact asked for (--precision, or its path) even though its export parity "
        "check failed (auto never runs one)",
    )


def load_model(args: argparse.Namespace, *, check_outputs: bool = True) -> Model:
    """``args.path`` loaded as the options of :func:`add_load_options` say."""
    return load(
        args.path,
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
        check_outputs=check_outputs,
        allow_failed=args.allow_failed,
    )


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
