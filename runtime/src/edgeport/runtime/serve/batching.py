"""Dynamic batching: concurrent requests merged along axis 0 into one ``Model.infer`` call.

:class:`Batcher` gathers the requests on the event loop and runs each call in a bounded pool of
threads, in one process and in each Ray Serve replica alike. Requests share a call when every
input has the same dtype and the same dimensions after axis 0 (a symbolic sequence length must
agree, for instance), up to ``limit`` samples per call; a request of ``limit`` samples or more
runs alone. Each call's outputs are split back by each request's sample count; a model whose
outputs do not follow axis 0 runs the requests one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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


class Overloaded(Exception):
    """Raised to a request that arrives while ``max_queued`` requests already wait."""


class Batcher:
    """Runs requests' feeds through ``infer`` in up to ``instances`` threads at once, merging
    those that wait into calls of at most ``limit`` samples (``limit`` 1: one by one).

    A free thread takes what waits at once, so requests merge when they arrive faster than calls
    finish; ``wait_s`` > 0 also holds a lone request that long for company (as Triton's
    ``max_queue_delay``). Past ``max_queued`` waiting requests a new one raises
    :class:`Overloaded` at once. ``on_call(samples)`` is told each call's size.
    """

    def __init__(
        self,
        infer: Infer,
        *,
        limit: int,
        wait_s: float = 0.0,
        max_queued: int = 64,
        instances: int = 1,
        on_call: Callable[[int], None] | None = None,
    ) -> None:
        self.infer, self.limit, self.wait_s = infer, limit, wait_s
        self.max_queued, self.instances, self.on_call = max_queued, instances, on_call
        self.pool = ThreadPoolExecutor(instances, thread_name_prefix="edgeport-infer")
        self.queue: deque[tuple[Feeds, asyncio.Future[Outputs]]] = deque()
        self.running = 0
        self._timer: asyncio.TimerHandle | None = None

    def waiting(self) -> int:
        """Requests waiting for a call."""
        return len(self.queue)

    async def __call__(self, feeds: Feeds) -> Outputs:
        if self.max_queued >= 0 and len(self.queue) >= self.max_queued:
            raise Overloaded(
                f"{len(self.queue)} requests already wait for this model (the bound); retry later"
            )
        future: asyncio.Future[Outputs] = asyncio.get_running_loop().create_future()
        self.queue.append((feeds, future))
        self._dispatch()
        return await future

    def _take(self) -> list[tuple[Feeds, asyncio.Future[Outputs]]]:
        """The waiting requests of the next call: the first, then more up to ``limit``."""
        taken = [self.queue.popleft()]
        total = sample_count(taken[0][0])
        while self.queue and total < self.limit:
            count = sample_count(self.queue[0][0])
            if total + count > self.limit:
                break
            taken.append(self.queue.popleft())
            total += count
        return taken

    def _queued_samples(self) -> int:
        return sum(sample_count(f) for f, _ in self.queue)

    def _dispatch(self, waited: bool = False) -> None:
        """Start calls while instances are free; with ``wait_s``, a call short of ``limit``
        samples starts only once its first request has waited that long (``waited``)."""
        loop = asyncio.get_running_loop()
        while self.queue and self.running < self.instances:
            short = self.wait_s > 0 and self.limit > 1 and self._queued_samples() < self.limit
            if short and not waited:
                if self._timer is None:
                    self._timer = loop.call_later(self.wait_s, self._waited)
                return
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._start(loop, self._take())

    def _waited(self) -> None:
        self._timer = None
        self._dispatch(waited=True)

    def _start(
        self, loop: asyncio.AbstractEventLoop, taken: list[tuple[Feeds, asyncio.Future[Outputs]]]
    ) -> None:
        self.running += 1
        items = [feeds for feeds, _ in taken]
        call = loop.run_in_executor(
            self.pool, infer_batches, self.infer, items, self.limit, self.on_call
        )
        call.add_done_callback(lambda done: self._finish(done, taken))

    def _finish(
        self,
        done: asyncio.Future[list[Result]],
        taken: list[tuple[Feeds, asyncio.Future[Outputs]]],
    ) -> None:
        self.running -= 1
        error = done.exception()
        results: list[Result] = [error] * len(taken) if error is not None else done.result()  # type: ignore[list-item]
        for (_, future), result in zip(taken, results, strict=True):
            if future.done():  # its request was cancelled (the client went away)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._dispatch()

    def close(self) -> None:
        """Stop the threads once the calls under way finish."""
        if self._timer is not None:
            self._timer.cancel()
        self.pool.shutdown(wait=True)
