"""``edgeport run MODEL``: run any model on named inputs and save its outputs.

Inputs come from an ``.npz`` file (one array per input, by name) or, without ``--inputs``, are
seeded synthetic data (``--shapes``, ``--value-range``, ``--seed``). The outputs are written to
``--out`` as an ``.npz`` (atomically) and summarised as a table: name, dtype, shape, min, max,
mean and how many values are NaN or Inf.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.cli.options import (
    add_input_options,
    add_load_options,
    load_model,
    parsed_inputs,
)
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.feeds import load_npz, synthetic_feeds
from edgeport.runtime.io import atomic_write_bytes
from edgeport.runtime.model import Model
from edgeport.runtime.reference import npz_bytes
from edgeport.runtime.tools.formatting import fmt_g, markdown_table


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run any model on inputs from an .npz file (or synthetic ones); save the outputs",
        description=(
            "Run MODEL (a bundle directory, .onnx or .engine file) once on --inputs (an .npz "
            "with one array per input, named as the input) or, without it, on seeded synthetic "
            "inputs, and write every output to --out as .npz. Prints the outputs' dtypes, "
            "shapes and value ranges, NaN and Inf included."
        ),
    )
    parser.add_argument("path", metavar="MODEL", help="bundle directory, .onnx or .engine file")
    parser.add_argument("--out", type=Path, help="write the outputs here as .npz")
    add_load_options(parser)
    add_input_options(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run_model)


def _feeds(model: Model, args: argparse.Namespace) -> tuple[dict[str, np.ndarray], str]:
    """The inputs and where they came from."""
    shapes, value_ranges = parsed_inputs(args)
    if args.inputs is not None:
        if shapes or value_ranges:
            raise ConfigError(
                "--shapes and --value-range shape synthetic inputs; with --inputs the arrays "
                "in the file are used as they are"
            )
        return load_npz(args.inputs, model.inputs), f"inputs from {args.inputs}"
    feeds = synthetic_feeds(model.inputs, shapes, value_ranges, args.seed)
    return feeds, (
        f"no --inputs given: synthetic inputs (seed {args.seed}; standard-normal floats, "
        "integers in the declared range or [0, 1]; --shapes and --value-range change them)"
    )


def tensor_stats(name: str, array: np.ndarray) -> dict[str, Any]:
    """dtype, shape, min, max and mean (of the finite values) and the NaN/Inf count."""
    values = array.astype(np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    stats: dict[str, Any] = {
        "name": name,
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "nonfinite": int(values.size - finite.size),
    }
    for key, reduce in (("min", np.min), ("max", np.max), ("mean", np.mean)):
        stats[key] = float(reduce(finite)) if finite.size else None
    return stats


def _table(rows: list[dict[str, Any]]) -> list[str]:
    cells = [
        [r["name"], r["dtype"], str(r["shape"])]
        + [fmt_g(r[key], 6) for key in ("min", "max", "mean")]
        + [str(r["nonfinite"] or "-")]
        for r in rows
    ]
    return markdown_table(("name", "dtype", "shape", "min", "max", "mean", "NaN/Inf"), cells)


def run_model(args: argparse.Namespace) -> int:
    with load_model(args, check_outputs=False) as model:  # its table reports NaN/Inf
        feeds, origin = _feeds(model, args)
        outputs = model.infer(feeds)
        target = model.artifact.name if model.artifact else model.path.name
        header = f"{model.path}: {target} on {model.backend} ({model.precision})"
    if args.out is not None:
        atomic_write_bytes(args.out, npz_bytes(outputs))
    inputs = [tensor_stats(k, v) for k, v in feeds.items()]
    results = [tensor_stats(k, v) for k, v in outputs.items()]
    if args.json:
        out = None if args.out is None else str(args.out)
        report = {"model": header, "inputs": origin, "input_stats": inputs, "outputs": results}
        print(json.dumps({**report, "out": out}, indent=2))
    else:
        lines = [f"# {header}", origin, "", "inputs:", *_table(inputs)]
        print("\n".join([*lines, "", "outputs:", *_table(results)]))
    bad = [r["name"] for r in results if r["nonfinite"]]
    if bad:
        print(f"warning: outputs {bad} contain NaN or Inf", file=sys.stderr)
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0
