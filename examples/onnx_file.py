"""Bring an ONNX file made anywhere: see what it takes, run it on the backend auto picks.

    python examples/onnx_file.py model.onnx
    python examples/onnx_file.py model.onnx --inputs in.npz   # one array per input name

Without ``--inputs``, every input is filled with zeros (the lowest value of a declared range),
each dynamic dimension at its minimum.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edgeport.runtime import load
from edgeport.runtime.specs import TensorSpec, numpy_dtype


def smallest_input(spec: TensorSpec) -> np.ndarray:
    """Zeros (or the lowest declared value) with every dynamic dimension at its minimum."""
    shape = [
        dim if isinstance(dim, int) else max(1, spec.ranges[axis][0] if spec.ranges else 1)
        for axis, dim in enumerate(spec.shape)
    ]
    low = spec.value_range[0] if spec.value_range else 0
    return np.full(shape, low, dtype=numpy_dtype(spec.dtype))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an .onnx file (a bundle or engine works too)")
    parser.add_argument("--inputs", type=Path, help="an .npz with one array per input")
    args = parser.parse_args(argv)

    with load(args.model) as model:  # backend="auto"
        print(model.explain())  # inputs, outputs, the chosen backend and why the others not
        if args.inputs:
            with np.load(args.inputs) as data:
                feeds = {name: data[name] for name in data.files}
        else:
            feeds = {spec.name: smallest_input(spec) for spec in model.inputs}
        outputs = model.infer(feeds)  # checked against the model's specs before it runs
    for name, array in outputs.items():
        low, high = array.min(), array.max()
        print(f"{name}: {array.dtype} {list(array.shape)}, values {low:.4g} .. {high:.4g}")


if __name__ == "__main__":
    main()
