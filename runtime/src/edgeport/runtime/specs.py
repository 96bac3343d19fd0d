"""A model's inputs and outputs, and the one check every feed passes before a backend sees it.

A :class:`TensorSpec` names a tensor, its dtype and its shape, where a dimension is a number
(fixed), a name (symbolic: every tensor that uses the name has the same size there) or None
(dynamic, unnamed). ``ranges`` gives each dimension's (min, opt, max): a TensorRT engine's
optimization profile, or the range a bundle was exported and checked for. ``value_range``
declares the values an integer input may hold (token ids below the vocabulary size).

:class:`FeedCheck` is compiled once per model from its input specs and run on every call: one
cheap combined test per input, then a slow path that names exactly what is wrong (the input,
what was expected, what came, and what to do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeport.runtime.errors import BackendUnavailable, InputError, ModelLoadError

UNBOUNDED = 2**31 - 1  # the max of a dynamic dimension nothing bounds
DTYPES = (
    "float32",
    "float16",
    "bfloat16",
    "float64",
    "int8",
    "uint8",
    "int16",
    "int32",
    "int64",
    "bool",
)
FLOAT_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64"})
Dim = int | str | None
DimRange = tuple[int, int, int]


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a spec dtype; bfloat16 needs ``ml_dtypes`` (numpy has none)."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError as exc:
            raise BackendUnavailable(
                "bfloat16 tensors need the ml_dtypes package (numpy has no bfloat16): "
                "pip install ml_dtypes"
            ) from exc
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def dim_text(dim: Dim) -> str:
    return "?" if dim is None else str(dim)


def shape_text(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join(dim_text(d) for d in shape) + "]"


def range_text(low: int, high: int) -> str:
    return f"{low}..{'unbounded' if high >= UNBOUNDED else high}"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, dtype, shape (int fixed, str symbolic, None dynamic), the
    (min, opt, max) of every dimension, and for integer inputs the declared value range."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    ranges: tuple[DimRange, ...] = ()  # () = fixed dims exact, dynamic ones 1..UNBOUNDED
    value_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("the name is empty")
        if self.dtype not in DTYPES:
            problems.append(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for axis, dim in enumerate(self.shape):
            if isinstance(dim, bool) or not (dim is None or isinstance(dim, int | str)):
                problems.append(f"dimension {axis} must be an int, a name or null, got {dim!r}")
            elif isinstance(dim, int) and not 0 <= dim <= UNBOUNDED:
                problems.append(f"dimension {axis} must lie in 0..{UNBOUNDED}, got {dim}")
        if self.ranges:
            if len(self.ranges) != len(self.shape):
                problems.append(
                    f"{len(self.ranges)} dimension ranges for a rank-{len(self.shape)} shape"
                )
            for axis, (dim, rng) in enumerate(zip(self.shape, self.ranges, strict=False)):
                if len(rng) != 3 or not all(isinstance(v, int) for v in rng):
                    problems.append(f"range of dimension {axis} must be 3 integers, got {rng!r}")
                elif not 0 <= rng[0] <= rng[1] <= rng[2] <= UNBOUNDED:
                    problems.append(
                        f"range of dimension {axis} needs 0 <= min <= opt <= max <= "
                        f"{UNBOUNDED}: {rng}"
                    )
                elif isinstance(dim, int) and rng != (dim, dim, dim):
                    problems.append(f"dimension {axis} is fixed at {dim} but its range is {rng}")
        if self.value_range is not None and not (
            len(self.value_range) == 2 and self.value_range[0] <= self.value_range[1]
        ):
            problems.append(f"value_range must be (low, high) with low <= high: {self.value_range}")
        if problems:
            raise InputError(f"invalid tensor spec {self.name!r}: " + "; ".join(problems))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def dim_range(self, axis: int) -> DimRange:
        """(min, opt, max) of one dimension."""
        if self.ranges:
            return self.ranges[axis]
        dim = self.shape[axis]
        if isinstance(dim, int):
            return (dim, dim, dim)
        return (1, 1, UNBOUNDED)

    @property
    def all_ranges(self) -> tuple[DimRange, ...]:
        return tuple(self.dim_range(axis) for axis in range(self.rank))

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def with_ranges(self, ranges: Sequence[DimRange]) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, self.shape, tuple(ranges), self.value_range)

    def describe(self) -> str:
        """``ids: int64 [batch, seq] (batch 1..32, seq 1..128; values 0..999)``"""
        text = f"{self.name}: {self.dtype} {shape_text(self.shape)}"
        bounds = [
            f"{dim_text(dim) if dim is not None else f'axis {axis}'} {range_text(lo, hi)}"
            for axis, (dim, (lo, _, hi)) in enumerate(zip(self.shape, self.all_ranges, strict=True))
            if not isinstance(dim, int)
        ]
        if self.value_range is not None:
            low, high = self.value_range
            bounds.append(f"values {low:g}..{high:g}")
        return text + (f" ({', '.join(bounds)})" if bounds else "")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.ranges:
            data["ranges"] = [list(r) for r in self.ranges]
        if self.value_range is not None:
            data["value_range"] = list(self.value_range)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        from edgeport.runtime.schema import decode

        return decode(data, cls, "tensor spec")


def merge_specs(
    file_specs: Sequence[TensorSpec], declared: Sequence[TensorSpec], where: str, kind: str
) -> tuple[TensorSpec, ...]:
    """The file's specs, checked against what a manifest or card declares for the same model,
    with the declared symbolic names, the tighter of the two ranges and the declared values.

    ``kind`` is "inputs" or "outputs". Names, order, dtypes, ranks and fixed dimensions must
    agree; a mismatch means the bundle was edited or mixed up and raises ``ModelLoadError``.
    """
    if [s.name for s in file_specs] != [s.name for s in declared]:
        raise ModelLoadError(
            f"{where}: the manifest names {kind} {[s.name for s in declared]}, the file has "
            f"{[s.name for s in file_specs]}; re-export the bundle"
        )
    merged = []
    for have, want in zip(file_specs, declared, strict=True):
        if have.dtype != want.dtype or have.rank != want.rank:
            raise ModelLoadError(
                f"{where}: {kind[:-1]} {have.name!r} is {have.dtype} {shape_text(have.shape)} in "
                f"the file but {want.dtype} {shape_text(want.shape)} in the manifest; re-export"
            )
        ranges = []
        for axis, declared_dim in enumerate(want.shape):
            low, _, high = have.dim_range(axis)
            dlo, dopt, dhi = want.dim_range(axis)
            if not isinstance(declared_dim, int) and dlo <= 1 and dhi >= UNBOUNDED:
                ranges.append(have.dim_range(axis))  # declared unbounded: the file's range
                continue
            if not low <= dlo <= dhi <= high:
                raise ModelLoadError(
                    f"{where}: {kind[:-1]} {have.name!r} axis {axis}: the manifest's range "
                    f"{range_text(dlo, dhi)} is not within what the file accepts "
                    f"({range_text(low, high)}); re-export the bundle"
                )
            ranges.append((dlo, dopt, dhi))
        shape = tuple(
            w if isinstance(w, str) or h is None else h
            for h, w in zip(have.shape, want.shape, strict=True)
        )
        merged.append(TensorSpec(have.name, have.dtype, shape, tuple(ranges), want.value_range))
    return tuple(merged)


def plain_array(value: Any) -> Any:
    """``value`` as a plain ``np.ndarray`` when it is one or a subclass (a view, no copy); a
    masked array is refused, since a view would drop its mask; anything else is returned as is
    (the caller says what was expected)."""
    if type(value) is np.ndarray or not isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.ma.MaskedArray):
        raise InputError(
            f"a masked array ({value.dtype}, shape {value.shape}) cannot be fed: its mask would be "
            "ignored; fill the masked values first, e.g. x.filled(0)"
        )
    return value.view(np.ndarray)


class _InputCheck:
    """The pre-computed checks of one input."""

    __slots__ = ("axes", "dtype", "finite", "name", "rank", "spec", "symbols", "values")

    def __init__(self, spec: TensorSpec, finite: bool) -> None:
        self.spec = spec
        self.name = spec.name
        self.dtype = numpy_dtype(spec.dtype)  # bfloat16: ml_dtypes, or a clear error now
        self.rank = spec.rank
        # (axis, low, high) for every dimension that is not 1..unbounded
        self.axes = tuple(
            (axis, lo, hi)
            for axis, (lo, _, hi) in enumerate(spec.all_ranges)
            if not (lo <= 1 and hi >= UNBOUNDED)
        )
        self.symbols = tuple(
            (axis, dim) for axis, dim in enumerate(spec.shape) if isinstance(dim, str)
        )
        self.finite = finite and spec.is_float
        self.values = spec.value_range if not spec.is_float else None


class FeedCheck:
    """Validates the feeds of one model: names, dtypes, ranks, dimensions against their ranges,
    shared symbolic dimensions, finite floats and declared integer value ranges.

    ``__call__`` returns the arrays in the model's input order, C-contiguous. Nothing is cast:
    a wrong dtype is refused with the cast the caller needs.
    """

    def __init__(self, specs: Sequence[TensorSpec], *, check_finite: bool = True) -> None:
        self.specs = tuple(specs)
        self._checks = tuple(_InputCheck(s, check_finite) for s in self.specs)
        self._names = frozenset(s.name for s in self.specs)
        self._shared = any(c.symbols for c in self._checks) and len(self._checks) > 1

    @property
    def checks(self) -> tuple[_InputCheck, ...]:
        """One check per input, in input order, for :meth:`one`."""
        return self._checks

    def __call__(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        if type(feeds) is not dict and not isinstance(feeds, Mapping):
            raise InputError(
                f"expected a dict of numpy arrays by input name ({self.names_text()}), got "
                f"{type(feeds).__name__}"
            )
        if len(feeds) != len(self._checks) or not self._names.issuperset(feeds):
            self._raise_names(feeds)
        arrays = [self.one(c, feeds[c.name]) for c in self._checks]
        if self._shared:
            self._check_symbols(arrays)
        return arrays

    def one(self, check: _InputCheck, array: Any) -> np.ndarray:
        """Check one input (the fast path is a few comparisons); return it C-contiguous. An
        ndarray subclass (``np.memmap``, ``np.load(..., mmap_mode="r")``) is viewed as a plain
        ndarray, without a copy."""
        if type(array) is not np.ndarray or array.dtype != check.dtype or array.ndim != check.rank:
            array = plain_array(array)
            if (
                type(array) is not np.ndarray
                or array.dtype != check.dtype
                or array.ndim != check.rank
            ):
                self._raise_array(check, array)
        shape = array.shape
        for axis, low, high in check.axes:
            if not low <= shape[axis] <= high:
                self._raise_dim(check, array, axis, low, high)
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        # NaN/Inf in one BLAS call: a sum of squares is finite iff every value is, unless huge
        # values overflow it, which the exact check tells apart (np.isfinite(x).all() costs
        # several times more per call; benchmarks/runtime_overhead.py).
        if (
            check.finite
            and array.size
            and not math.isfinite(np.vdot(array, array))
            and not np.isfinite(array).all()
        ):
            self._raise_not_finite(check, array)
        values = check.values
        if (
            values is not None
            and array.size
            and (array.min() < values[0] or array.max() > values[1])
        ):
            self._raise_values(check, array, *values)
        return array

    # -- the slow paths: say exactly what is wrong -------------------------------------------

    def names_text(self) -> str:
        return ", ".join(repr(s.name) for s in self.specs)

    def _raise_names(self, feeds: Mapping[str, Any]) -> None:
        given = [str(k) for k in feeds]
        missing = [s.name for s in self.specs if s.name not in feeds]
        unknown = [k for k in given if k not in self._names]
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unknown:
            parts.append(f"unknown {unknown}")
        raise InputError(
            f"expected inputs {self.names_text()}; got {given} ({', '.join(parts)})"
            + ("; names are case-sensitive" if unknown else "")
        )

    def _raise_array(self, check: _InputCheck, array: Any) -> None:
        spec = check.spec
        want = f"{spec.dtype} {shape_text(spec.shape)}"
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"input {spec.name!r}: expected a numpy array ({want}), got "
                f"{type(array).__name__}; convert with np.asarray(value, dtype=np.{spec.dtype})"
            )
        if array.dtype != check.dtype:
            module = "ml_dtypes" if spec.dtype == "bfloat16" else "np"
            raise InputError(
                f"input {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype} (shape "
                f"{array.shape}); inputs are not converted: use x.astype({module}.{spec.dtype})"
            )
        if array.ndim != check.rank:
            raise InputError(
                f"input {spec.name!r}: expected {check.rank}-D {want}, got {array.ndim}-D shape "
                f"{array.shape}"
            )

    def _raise_dim(
        self, check: _InputCheck, array: np.ndarray, axis: int, low: int, high: int
    ) -> None:
        spec = check.spec
        dim = spec.shape[axis]
        size = array.shape[axis]
        if low == high:
            raise InputError(
                f"input {spec.name!r}: axis {axis} must be {low}, got {size} (shape "
                f"{array.shape}, expected {shape_text(spec.shape)})"
            )
        named = f" ({dim})" if isinstance(dim, str) else ""
        raise InputError(
            f"input {spec.name!r}: axis {axis}{named} is {size}, outside the model's range "
            f"{range_text(low, high)} (shape {array.shape}); "
            + ("split the input" if size > high else "pad the input")
        )

    def _check_symbols(self, arrays: Sequence[np.ndarray]) -> None:
        seen: dict[str, tuple[int, str, int]] = {}
        for check, array in zip(self._checks, arrays, strict=True):
            for axis, symbol in check.symbols:
                size = array.shape[axis]
                first = seen.setdefault(symbol, (size, check.name, axis))
                if first[0] != size:
                    raise InputError(
                        f"input {check.name!r} has {symbol}={size} on axis {axis}, but input "
                        f"{first[1]!r} has {symbol}={first[0]} on axis {first[2]}: inputs that "
                        f"share the dimension {symbol!r} must agree"
                    )

    def _raise_not_finite(self, check: _InputCheck, array: np.ndarray) -> None:
        values = array.astype(np.float32)
        nan = int(np.isnan(values).sum())
        inf = int(np.isinf(values).sum())
        first = np.argwhere(~np.isfinite(values))[0]
        where = f"sample {int(first[0])}" if values.ndim else "the scalar"
        raise InputError(
            f"input {check.name!r}: expected finite values, got {nan} NaN and {inf} Inf in "
            f"shape {array.shape} (first in {where}, index {tuple(int(i) for i in first)}); "
            "check the preprocessing"
        )

    def _raise_values(self, check: _InputCheck, array: np.ndarray, low: float, high: float) -> None:
        bad = np.argwhere((array < low) | (array > high))
        first = tuple(int(i) for i in bad[0])
        raise InputError(
            f"input {check.name!r}: values must lie in [{low:g}, {high:g}] (the model declares "
            f"this range), got {len(bad)} outside, e.g. {array[first].item()} at index {first}"
        )


def nonfinite_outputs(names: Sequence[str], arrays: Sequence[np.ndarray]) -> list[str]:
    """``name: N NaN, M Inf`` for each float output holding any (one BLAS call per output when
    there are none, as for inputs)."""
    found = []
    for name, array in zip(names, arrays, strict=True):
        if array.dtype.kind != "f" or not array.size or math.isfinite(np.vdot(array, array)):
            continue
        values = array.astype(np.float32) if array.dtype.itemsize < 2 else array
        nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        if nan or inf:
            found.append(f"{name}: {nan} NaN, {inf} Inf of {array.size}")
    return found
