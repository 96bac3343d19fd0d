"""Dynamic batching: concurrent requests merged along axis 0 into one ``Model.infer`` call.

Serve's ``@serve.batch`` gathers the requests (see :mod:`edgeport.runtime.serve.app`); this
module decides which of them can share a call and does the merging, with no Ray in it.
Requests share a call when every input has the same dtype and the same dimensions after axis 0
(a symbolic sequence length must agree, for instance), up to ``limit`` samples per call; a
request of ``limit`` samples or more runs alone. Each call's outputs are split back by each
request's sample count; a model whose outputs do not follow axis 0 runs the requests one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np

from edgeport.runtime.feeds import sample_count
from edgeport.runtime.specs import TensorSpec

log = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


def can_merge(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Whether requests to a model with these specs can be merged along axis 0: every input and
    output has a leading axis that is not fixed, and named leading axes share one name."""
    specs = [*inputs, *outputs]
    if any(s.rank == 0 or isinstance(s.shape[0], int) for s in specs):
        return False
    names = {s.shape[0] for s in specs if isinstance(s.shape[0], str)}
    return len(names) <= 1 and all(s.dim_range(0)[2] > 1 for s in inputs)


def _signature(feeds: Feeds) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items())


def plan_groups(items: Sequence[Feeds], limit: int) -> list[list[int]]:
    """Indices of ``items`` grouped into calls: same signature, at most ``limit`` samples each
    (a larger item alone), in arrival order within a group."""
    open_groups: dict[tuple[object, ...], tuple[list[int], int]] = {}
    groups: list[list[int]] = []
    for index, feeds in enumerate(items):
        key, count = _signature(feeds), sample_count(feeds)
        members, total = open_groups.get(key, ([], 0))
        if members and total + count > limit:
            groups.append(members)
            members, total = [], 0
        open_groups[key] = ([*members, index], total + count)
    groups += [members for members, _ in open_groups.values()]
    return sorted(groups, key=lambda g: g[0])


def merge(items: Sequence[Feeds]) -> dict[str, np.ndarray]:
    """The inputs of ``items`` concatenated along axis 0 (one item: as it is)."""
    if len(items) == 1:
        return dict(items[0])
    return {name: np.concatenate([f[name] for f in items]) for name in items[0]}


def split(outputs: Outputs, counts: Sequence[int]) -> list[Outputs] | None:
    """``outputs`` split into one dict per request of ``counts`` samples; None when an output's
    axis 0 does not hold the total (the model does not batch along axis 0)."""
    total = sum(counts)
    if any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
        return None
    edges = np.cumsum(counts)[:-1]
    parts = {name: np.split(a, edges) for name, a in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(counts))]


Infer = Callable[[Feeds], Outputs]
Result = Outputs | Exception


def _run_group(infer: Infer, items: Sequence[Feeds]) -> list[Result]:
    counts = [sample_count(f) for f in items]
    try:
        outputs = infer(merge(items))
    except Exception as exc:  # handed to each request of the group, which raises it
        log.exception("a merged call of %d requests failed", len(items))
        return [exc] * len(items)
    parts = split(outputs, counts) if len(items) > 1 else [outputs]
    if parts is None:
        log.warning("outputs do not follow axis 0; running %d requests one by one", len(items))
        return [r for f in items for r in _run_group(infer, [f])]
    return list(parts)


def infer_batches(
    infer: Infer,
    items: Sequence[Feeds],
    limit: int,
    on_call: Callable[[int], None] | None = None,
) -> list[Result]:
    """One result per item (its outputs, or the exception its call raised), each group of
    ``plan_groups`` run as one ``infer`` call; ``on_call(samples)`` is told each call's size."""
    results: list[Result | None] = [None] * len(items)
    for group in plan_groups(items, limit):
        members = [items[i] for i in group]
        if on_call is not None:
            on_call(sum(sample_count(f) for f in members))
        for index, result in zip(group, _run_group(infer, members), strict=True):
            results[index] = result
    return cast(list[Result], results)  # plan_groups covers every index
