"""Named input samples: the example, parity and calibration data of an export.

A batch is a dict of numpy arrays by input name, every array with a leading sample axis. Data
comes as tensors or arrays (one, a tuple in input order, or a dict by name), as an iterable of
such dicts, or as an ``.npz`` file with one array per input (read without unpickling).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.feeds import load_npz

Batch = dict[str, np.ndarray]
SampleSource = str | Path | Mapping[str, Any] | Iterable[Mapping[str, Any]]


def to_numpy(value: Any, what: str) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return np.asarray(value.detach().cpu().numpy())
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, int | float | bool | list | tuple):
        return np.asarray(value)
    raise ConfigError(f"{what}: expected a tensor or numpy array, got {type(value).__name__}")


def count(batch: Mapping[str, np.ndarray]) -> int:
    """Samples in a batch: the leading axis of its first array."""
    first = next(iter(batch.values()))
    return int(first.shape[0]) if first.ndim else 1


def named(value: Any, names: Sequence[str], what: str) -> Batch:
    """One batch from a tensor, a sequence in ``names`` order or a dict by name."""
    if isinstance(value, Mapping):
        given = [str(k) for k in value]
        if sorted(given) != sorted(names):
            raise ConfigError(
                f"{what} has inputs {given}, the model takes {list(names)}: give one array per "
                "input, named as the input"
            )
        batch = {n: to_numpy(value[n], f"{what} {n!r}") for n in names}
    else:
        items = list(value) if isinstance(value, list | tuple) else [value]
        if len(items) != len(names):
            raise ConfigError(
                f"{what} has {len(items)} arrays, the model takes {len(names)} inputs "
                f"({list(names)})"
            )
        batch = {n: to_numpy(v, f"{what} {n!r}") for n, v in zip(names, items, strict=True)}
    _check_counts(batch, what)
    return batch


def _check_counts(batch: Batch, what: str) -> None:
    scalars = [n for n, a in batch.items() if a.ndim == 0]
    if scalars:
        raise ConfigError(
            f"{what}: inputs {scalars} are scalars; every input needs a leading sample axis"
        )
    sizes = {n: a.shape[0] for n, a in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ConfigError(
            f"{what}: inputs hold different numbers of samples {sizes}; axis 0 is the sample "
            "axis and must agree"
        )
    if 0 in sizes.values():
        raise ConfigError(f"{what} holds no samples")


def read_batches(source: SampleSource, names: Sequence[str], what: str) -> list[Batch]:
    """Batches from an ``.npz`` path, one dict, or an iterable of dicts (see the module doc)."""
    if isinstance(source, str | Path):
        try:
            arrays = load_npz(source)
        except InputError as exc:
            raise ConfigError(f"{what}: {exc}") from exc
        return [named(arrays, names, f"{what} {Path(source).name}")]
    if isinstance(source, Mapping):
        return [named(source, names, what)]
    if not isinstance(source, Iterable):
        raise ConfigError(
            f"{what}: expected an .npz path, a dict of arrays by input name or an iterable of "
            f"such dicts, got {type(source).__name__}"
        )
    batches = [named(item, names, f"{what} batch {i}") for i, item in enumerate(source)]
    if not batches:
        raise ConfigError(f"{what} is empty")
    return batches


def check_like(batches: Sequence[Batch], example: Batch, what: str) -> None:
    """Every batch has the example's dtypes and ranks (nothing is converted)."""
    for i, batch in enumerate(batches):
        for name, array in batch.items():
            want = example[name]
            if array.dtype != want.dtype or array.ndim != want.ndim:
                raise ConfigError(
                    f"{what} batch {i} input {name!r} is {array.dtype} {array.shape}, the example "
                    f"is {want.dtype} {want.shape}: give the same dtype and rank "
                    f"(x.astype(np.{want.dtype}))"
                )


def stack(batches: Sequence[Batch], limit: int | None = None) -> tuple[Batch, int]:
    """The batches whose per-sample shapes match the first one's, concatenated along the sample
    axis (at most ``limit`` samples), and how many samples were left out."""
    first = batches[0]
    same = [b for b in batches if all(b[n].shape[1:] == first[n].shape[1:] for n in first)]
    total = sum(count(b) for b in batches)
    joined = {n: np.concatenate([b[n] for b in same]) for n in first}
    if limit is not None:
        joined = {n: a[:limit] for n, a in joined.items()}
    return joined, total - count(joined)
