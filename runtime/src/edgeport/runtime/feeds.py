"""Inputs for any model: shapes, value ranges, synthetic data, .npz files, and :class:`InputData`
(real samples or synthetic data at any shapes) for the tools that time and tune models.

``--shapes name:1x3x224x224,ids:1x16`` fixes dynamic dimensions (as trtexec's ``--shapes``,
OpenVINO's ``-data_shape`` and ORT perf_test's ``--data_shape``); at export, ``name:MIN:OPT:MAX``
gives a TensorRT optimization profile per input. ``--value-range ids:0,999`` bounds the values
of synthetic data. Synthetic data is seeded: standard-normal floats, integers uniform in their
range (the model's declared value range, else [0, 1] as Polygraphy's default), random bools.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.specs import UNBOUNDED, DimRange, TensorSpec, numpy_dtype

DEFAULT_INT_RANGE = (0, 1)
Feeds = dict[str, np.ndarray]
Shapes = dict[str, tuple[int, ...]]
_DIMS_RE = re.compile(r"^\d+(x\d+)*$|^$")  # "1x3x224x224"; "" is a scalar


def _dims(text: str, what: str) -> tuple[int, ...]:
    text = text.strip()
    if not _DIMS_RE.match(text):
        raise ConfigError(f"{what}: expected dimensions like 1x3x224x224, got {text!r}")
    return tuple(int(d) for d in text.split("x")) if text else ()


def _entries(text: str | Iterable[str], what: str) -> list[tuple[str, str]]:
    """``name:rest`` entries from comma-separated text (or several such texts)."""
    texts = [text] if isinstance(text, str) else list(text)
    out = []
    for item in (part for t in texts for part in t.split(",")):
        if not item.strip():
            continue
        name, sep, rest = item.strip().partition(":")
        if not sep or not name.strip():
            raise ConfigError(f"expected NAME:{what.upper()}, got {item.strip()!r}")
        out.append((name.strip(), rest))
    return out


def parse_shapes(text: str | Iterable[str]) -> dict[str, tuple[int, ...]]:
    """``"input:1x3x224x224,ids:1x16"`` to {name: shape}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, rest in _entries(text, "shape"):
        if name in shapes:
            raise ConfigError(f"--shapes names input {name!r} twice")
        shapes[name] = _dims(rest, f"--shapes {name}")
    return shapes


def parse_profiles(text: str | Iterable[str]) -> dict[str, tuple[DimRange, ...]]:
    """``"ids:1x8:4x64:32x128"`` (MIN:OPT:MAX, or one fixed shape) to {name: per-dim ranges}."""
    profiles: dict[str, tuple[DimRange, ...]] = {}
    for name, rest in _entries(text, "shape"):
        parts = [_dims(p, f"--shapes {name}") for p in rest.split(":")]
        if len(parts) == 1:
            parts *= 3
        if len(parts) != 3 or len({len(p) for p in parts}) != 1:
            raise ConfigError(
                f"--shapes {name}: expected MIN:OPT:MAX shapes of one rank (or one shape), got "
                f"{rest!r}"
            )
        ranges = tuple(zip(*parts, strict=True))
        bad = [r for r in ranges if not 1 <= r[0] <= r[1] <= r[2]]
        if bad:
            raise ConfigError(
                f"--shapes {name}: each dimension needs 1 <= min <= opt <= max: {rest}"
            )
        profiles[name] = ranges
    return profiles


def parse_value_ranges(text: str | Iterable[str]) -> dict[str, tuple[float, float]]:
    """``"ids:0,999"`` (several as separate texts) to {name: (low, high)}."""
    texts = [text] if isinstance(text, str) else list(text)
    out: dict[str, tuple[float, float]] = {}
    for item in texts:
        name, sep, rest = item.partition(":")
        try:
            low, high = (float(v) for v in rest.split(","))
        except ValueError:
            raise ConfigError(f"--value-range expects NAME:LOW,HIGH, got {item!r}") from None
        if not sep or not name or not low <= high:
            raise ConfigError(f"--value-range expects NAME:LOW,HIGH with LOW <= HIGH, got {item!r}")
        out[name] = (low, high)
    return out


def _check_names(names: Iterable[str], specs: Sequence[TensorSpec], what: str) -> None:
    known = [s.name for s in specs]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{what} names unknown inputs {unknown}; the model has {known}")


def resolve_shapes(
    specs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """A concrete shape per input: the given one, else fixed dimensions as they are and dynamic
    ones at their range's ``opt`` (1 when unbounded), a symbolic dimension the same everywhere."""
    shapes = dict(shapes or {})
    _check_names(shapes, specs, "--shapes")
    symbols: dict[str, int] = {}
    for spec in specs:  # given shapes first fix the symbols they name
        given = shapes.get(spec.name)
        if given is not None:
            if len(given) != spec.rank:
                raise ConfigError(
                    f"--shapes {spec.name}: {len(given)} dimensions for a rank-{spec.rank} input "
                    f"{spec.describe()}"
                )
            for dim, size in zip(spec.shape, given, strict=True):
                if isinstance(dim, str):
                    symbols.setdefault(dim, int(size))
    out = {}
    for spec in specs:
        if spec.name in shapes:
            out[spec.name] = tuple(int(d) for d in shapes[spec.name])
            continue
        dims = []
        for dim, (_, opt, high) in zip(spec.shape, spec.all_ranges, strict=True):
            if isinstance(dim, int):
                dims.append(dim)
            elif isinstance(dim, str):
                dims.append(symbols.setdefault(dim, opt if high < UNBOUNDED else max(opt, 1)))
            else:
                dims.append(opt)
        out[spec.name] = tuple(dims)
    return out


def synthetic_feeds(
    specs: Sequence[TensorSpec],
    shapes: Mapping[str, Sequence[int]] | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Seeded random inputs of the model's dtypes, in its input order (see the module docstring)."""
    value_ranges = dict(value_ranges or {})
    _check_names(value_ranges, specs, "--value-range")
    rng = np.random.default_rng(seed)
    resolved = resolve_shapes(specs, shapes)
    feeds = {}
    for spec in specs:
        shape = resolved[spec.name]
        dtype = numpy_dtype(spec.dtype)
        bounds = value_ranges.get(spec.name) or spec.value_range
        if spec.dtype == "bool":
            array = rng.random(shape) < 0.5
        elif spec.is_float:
            if bounds is None:
                values = rng.standard_normal(shape)
            else:
                values = rng.uniform(bounds[0], bounds[1], shape)
            array = values.astype(np.float32).astype(dtype)
        else:
            low, high = bounds or DEFAULT_INT_RANGE
            info = np.iinfo(dtype)
            low, high = max(int(np.ceil(low)), info.min), min(int(np.floor(high)), info.max)
            array = rng.integers(low, high, shape, dtype=dtype, endpoint=True)
        feeds[spec.name] = np.asarray(array, order="C")  # ascontiguousarray makes 0-d 1-d
    return feeds


def sample_count(feeds: Mapping[str, np.ndarray]) -> int:
    """Samples in ``feeds``: the first input's leading axis (1 for a scalar)."""
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1


def load_npz(path: str | Path, specs: Sequence[TensorSpec] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (never unpickled); with ``specs``, exactly their names."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError as exc:
        raise InputError(f"inputs file not found: {path}") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(
            f"cannot read {path} as .npz arrays (np.savez; object arrays are refused): {exc}"
        ) from exc
    if specs is not None:
        names = [s.name for s in specs]
        if sorted(arrays) != sorted(names):
            raise InputError(
                f"{path} holds arrays {sorted(arrays)}, the model's inputs are {names}: save "
                "one array per input, named as the input (np.savez(path, **{name: array}))"
            )
        arrays = {name: arrays[name] for name in names}
    return arrays


def conform(array: np.ndarray, spec: TensorSpec, source: str) -> np.ndarray:
    """``array`` as ``spec``'s dtype: floats are converted between float types (an fp16 model
    fed float32 data), anything else must already match."""
    dtype = numpy_dtype(spec.dtype)
    if array.dtype == dtype:
        return np.ascontiguousarray(array)
    if spec.is_float and array.dtype.kind == "f":
        return np.ascontiguousarray(array.astype(dtype))
    raise ConfigError(
        f"input {spec.name!r}: {source} holds {array.dtype}, the model takes {spec.dtype}; "
        f"save it as {spec.dtype}"
    )


def _take(array: np.ndarray, count: int, name: str, source: str) -> np.ndarray:
    """The first ``count`` samples along axis 0, the samples repeated when there are fewer."""
    if len(array) == 0:
        raise ConfigError(f"input {name!r}: {source} holds no samples (shape {array.shape})")
    if len(array) < count:
        array = np.concatenate([array] * math.ceil(count / len(array)))
    return array[:count]


@dataclass(frozen=True)
class InputData:
    """Where inputs come from: ``samples`` by input name (samples along axis 0), or synthetic
    data (``samples`` None) seeded by ``seed`` within ``value_ranges``."""

    source: str
    samples: Mapping[str, np.ndarray] | None = None
    value_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    seed: int = 0

    @property
    def shapes(self) -> Shapes:
        """The stored samples' shapes: what a workload leaves open defaults to them."""
        return {k: tuple(v.shape) for k, v in (self.samples or {}).items()}

    def feeds(self, specs: Sequence[TensorSpec], shapes: Mapping[str, tuple[int, ...]]) -> Feeds:
        """Inputs of exactly ``shapes`` and the dtypes of ``specs``."""
        if self.samples is None:
            return synthetic_feeds(specs, shapes, self.value_ranges, self.seed)
        out = {}
        for spec in specs:
            array = self.samples.get(spec.name)
            want = tuple(shapes[spec.name])
            if array is None:
                raise ConfigError(
                    f"{self.source} has no array for input {spec.name!r} (it has "
                    f"{sorted(self.samples)})"
                )
            if array.shape[1:] != want[1:] or array.ndim != len(want):
                raise ConfigError(
                    f"input {spec.name!r}: {self.source} has shape {list(array.shape)}, the row "
                    f"needs {list(want)}; only axis 0 (samples) is tiled or cut, so give shapes "
                    "that match the data, or synthetic inputs"
                )
            if want:
                array = _take(array, want[0], spec.name, self.source)
            out[spec.name] = conform(array, spec, self.source)
        return out
