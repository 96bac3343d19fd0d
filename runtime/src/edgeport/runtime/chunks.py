"""Any number of samples through a model that takes batches of a limited size: split above the
largest batch it takes, pad below the smallest, and join the outputs again."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edgeport.runtime.errors import InputError
from edgeport.runtime.feeds import sample_count

Run = Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]]


def run_in_chunks(
    run: Run, feeds: Mapping[str, np.ndarray], chunk: int, min_batch: int = 1
) -> dict[str, np.ndarray]:
    """``run`` over the samples along axis 0 of ``feeds``, in calls of at most ``chunk``; a last
    call smaller than ``min_batch`` is padded with copies of its last sample, whose outputs are
    dropped. When the samples take one call, its outputs are returned as they are; otherwise
    every output's first axis must be the batch (``InputError``), and they are joined by
    :func:`join_outputs`."""
    count = sample_count(feeds)
    if min_batch <= count <= chunk:
        return dict(run(dict(feeds)))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, count, chunk):
        part = {k: v[start : start + chunk] for k, v in feeds.items()}
        n = sample_count(part)
        if n < min_batch:
            pad = min_batch - n
            part = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in part.items()}
        size = max(n, min_batch)
        result = {name: np.asarray(array) for name, array in run(part).items()}
        for name, array in result.items():
            if array.ndim == 0 or array.shape[0] != size:
                raise InputError(
                    f"output {name!r} has shape {array.shape} for a batch of {size}: its first "
                    "axis is not the batch, so the samples cannot be split into the batches this "
                    f"model takes ({min_batch}..{chunk})"
                )
        parts.append({k: v[:n] for k, v in result.items()})
    return join_outputs(parts)


def join_outputs(per_call: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Every call's outputs as one array per name: concatenated along axis 0 when their other
    axes agree, else stacked (scalars) or flattened and concatenated."""
    if len(per_call) == 1:
        return dict(per_call[0])
    joined = {}
    for name in per_call[0]:
        arrays = [call[name] for call in per_call]
        if all(a.ndim and a.shape[1:] == arrays[0].shape[1:] for a in arrays):
            joined[name] = np.concatenate(arrays)
        elif all(a.shape == arrays[0].shape for a in arrays):
            joined[name] = np.stack(arrays)
        else:
            joined[name] = np.concatenate([a.reshape(-1) for a in arrays])
    return joined
