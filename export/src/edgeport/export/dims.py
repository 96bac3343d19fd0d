"""Dynamic dimensions: which input axes are dynamic, their (min, opt, max), and what that makes
of the torch.export constraints, the artifacts' TensorSpecs and the TensorRT profiles.

A dynamic dimension is named (``batch``, ``seq``); inputs that share a name share the size.
Its range comes from ``ExportSettings.shapes`` (per input, ``MIN:OPT:MAX``) and, for ``batch``,
from ``ExportSettings.batch``. One without a range is unbounded in ONNX and must be given one
before a TensorRT engine can be built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeport.export.settings import BATCH_DIM, ExportSettings
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.feeds import parse_profiles
from edgeport.runtime.specs import UNBOUNDED, DimRange, TensorSpec

Axes = dict[str, dict[int, str]]  # input -> {axis: dimension name}
Shape3 = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def dynamic_axes(settings: ExportSettings, example: Mapping[str, np.ndarray]) -> Axes:
    """The dynamic axes: as given, else axis 0 of every input (not scalars) named ``batch``."""
    if settings.dynamic_shapes is None:
        return {name: {0: BATCH_DIM} for name, array in example.items() if array.ndim}
    axes = {name: dict(dims) for name, dims in settings.dynamic_shapes.items()}
    unknown = sorted(set(axes) - set(example))
    if unknown:
        raise ConfigError(
            f"dynamic_shapes names unknown inputs {unknown}; the inputs are {list(example)}"
        )
    for name, dims in axes.items():
        rank = example[name].ndim
        bad = [axis for axis in dims if not 0 <= axis < rank]
        if bad:
            raise ConfigError(
                f"dynamic_shapes[{name!r}]: axes {bad} do not exist in a rank-{rank} input "
                f"(example shape {example[name].shape})"
            )
    return axes


def dim_ranges(
    settings: ExportSettings, axes: Axes, example: Mapping[str, np.ndarray]
) -> dict[str, DimRange]:
    """(min, opt, max) of each named dynamic dimension that has one (see the module doc)."""
    ranges: dict[str, DimRange] = {}
    for name, text in settings.shapes.items():
        if name not in example:
            raise ConfigError(f"shapes names unknown input {name!r}; inputs: {list(example)}")
        per_dim = parse_profiles(f"{name}:{text}")[name]
        if len(per_dim) != example[name].ndim:
            raise ConfigError(
                f"shapes[{name!r}] = {text!r} has rank {len(per_dim)}, the input has rank "
                f"{example[name].ndim} (example shape {example[name].shape})"
            )
        for axis, rng in enumerate(per_dim):
            _add_range(ranges, name, axis, rng, axes, example)
    if any(BATCH_DIM in dims.values() for dims in axes.values()):
        batch = settings.batch
        ranges.setdefault(BATCH_DIM, (batch.min, batch.opt, batch.max))
    return ranges


def _add_range(
    ranges: dict[str, DimRange],
    name: str,
    axis: int,
    rng: DimRange,
    axes: Axes,
    example: Mapping[str, np.ndarray],
) -> None:
    dim = axes.get(name, {}).get(axis)
    size = example[name].shape[axis]
    if dim is None:
        if rng != (size, size, size):
            raise ConfigError(
                f"shapes[{name!r}] gives axis {axis} the range {rng}, but that axis is static "
                f"(size {size}); make it dynamic with --dynamic {name}:{axis}=NAME"
            )
        return
    if dim in ranges and ranges[dim] != rng:
        raise ConfigError(
            f"dimension {dim!r} has the range {ranges[dim]} from one input and {rng} from "
            f"{name!r} axis {axis}: inputs that share a dimension share its range"
        )
    ranges[dim] = rng


def tracing_example(example: Mapping[str, np.ndarray], axes: Axes) -> dict[str, np.ndarray]:
    """The example with every dynamic axis of size 1 doubled: torch.export specialises sizes
    0 and 1, so a dynamic axis needs an example of at least 2 (values are only traced)."""
    grown = {name: np.asarray(array) for name, array in example.items()}
    for name, dims in axes.items():
        for axis in dims:
            if grown[name].shape[axis] == 1:
                grown[name] = np.concatenate([grown[name]] * 2, axis=axis)
    return grown


def check_example(
    example: Mapping[str, np.ndarray], axes: Axes, ranges: Mapping[str, DimRange]
) -> None:
    """Each dynamic axis of the (tracing) example lies within its dimension's range."""
    for name, dims in axes.items():
        for axis, dim in dims.items():
            low, _, high = ranges.get(dim, (1, 1, UNBOUNDED))
            size = example[name].shape[axis]
            if not low <= size <= max(high, 2):
                raise ConfigError(
                    f"example input {name!r} has {dim}={size} on axis {axis}, outside the range "
                    f"{low}..{high} given for {dim!r}; widen the range or change the example"
                )


def torch_dynamic_shapes(
    axes: Mapping[str, Mapping[int, str]], ranges: Mapping[str, DimRange], order: Sequence[str]
) -> tuple[dict[int, Any] | None, ...]:
    """The ``dynamic_shapes`` argument of ``torch.onnx.export``: one ``Dim`` per name."""
    from torch.export import Dim

    dims: dict[str, Any] = {}
    for name in sorted({d for per_input in axes.values() for d in per_input.values()}):
        low, _, high = ranges.get(name, (1, 1, UNBOUNDED))
        bounds = {"min": low} if high >= UNBOUNDED else {"min": low, "max": max(high, 2)}
        dims[name] = Dim(name, **bounds)
    return tuple(
        {axis: dims[dim] for axis, dim in axes[name].items()} if axes.get(name) else None
        for name in order
    )


def input_ranges(
    spec: TensorSpec, ranges: Mapping[str, DimRange], example: np.ndarray
) -> tuple[DimRange, ...]:
    """Per-axis (min, opt, max) of an input: fixed, from its dimension's range, or (for a
    dynamic axis without one) 1..unbounded with the example's size as opt."""
    out: list[DimRange] = []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int):
            out.append((dim, dim, dim))
        elif isinstance(dim, str) and dim in ranges:
            out.append(ranges[dim])
        else:
            out.append((1, max(int(example.shape[axis]), 1), UNBOUNDED))
    return tuple(out)


def engine_profiles(inputs: Sequence[TensorSpec]) -> dict[str, Shape3]:
    """One TensorRT profile entry (min, opt, max shapes) per input; a dynamic axis without a
    range raises ``ConfigError`` saying what to pass."""
    profiles: dict[str, Shape3] = {}
    for spec in inputs:
        unbounded = [axis for axis, (_, _, high) in enumerate(spec.all_ranges) if high >= UNBOUNDED]
        if unbounded:
            example = "x".join("1" if a in unbounded else str(d) for a, d in enumerate(spec.shape))
            raise ConfigError(
                f"a TensorRT engine needs a range for every dynamic axis: input {spec.name!r} "
                f"{spec.describe()} has none for axes {unbounded}; pass --shapes "
                f"{spec.name}:MIN:OPT:MAX (e.g. {spec.name}:{example}:...:...) or "
                f"shapes={{{spec.name!r}: (min_shape, opt_shape, max_shape)}}"
            )
        low, opt, high = zip(*spec.all_ranges, strict=True)
        profiles[spec.name] = (tuple(low), tuple(opt), tuple(high))
    return profiles
