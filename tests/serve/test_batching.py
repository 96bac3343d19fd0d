"""Dynamic batching without a server: which requests share a call, and a real ONNX Runtime
model giving each merged request exactly the outputs it gives it alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.serve.batching import (
    Batcher,
    Overloaded,
    can_merge,
    infer_batches,
    merge,
    plan_groups,
    split,
)
from edgeport.runtime.specs import TensorSpec


def feeds(batch: int, seq: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "ids": rng.integers(0, rt_graphs.VOCAB, (batch, seq)).astype(np.int64),
        "mask": rng.random((batch, seq)) < 0.5,
    }


def test_requests_group_by_shape_up_to_the_limit() -> None:
    items = [feeds(1), feeds(2), feeds(1, seq=3), feeds(4), feeds(1), feeds(9), feeds(1, seq=3)]
    groups = plan_groups(items, limit=4)
    assert groups == [[0, 1], [2, 6], [3], [4], [5]]
    for group in groups:
        assert len({items[i]["ids"].shape[1:] for i in group}) == 1
        assert sum(items[i]["ids"].shape[0] for i in group) <= 4 or len(group) == 1


def test_merge_and_split_are_inverse() -> None:
    items = [feeds(1, seed=1), feeds(3, seed=2)]
    merged = merge(items)
    assert merged["ids"].shape == (4, 2)
    parts = split(merged, [1, 3])
    assert parts is not None
    for item, part in zip(items, parts, strict=True):
        assert all(np.array_equal(item[k], part[k]) for k in item)
    assert split({"total": np.zeros(3)}, [1, 3]) is None  # not along axis 0


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        ((("batch", 3), ("batch", 10)), True),
        (((None, 3), (None, 10)), True),
        (((1, 3), (1, 10)), False),  # fixed batch
        ((("batch", 3), ("n", 10)), False),  # the output's axis 0 is another dimension
        (((), ("batch",)), False),  # a scalar input
    ],
)
def test_can_merge(shapes: tuple[tuple[object, ...], ...], expected: bool) -> None:
    inputs = (TensorSpec("x", "float32", shapes[0]),)  # type: ignore[arg-type]
    outputs = (TensorSpec("y", "float32", shapes[1]),)  # type: ignore[arg-type]
    assert can_merge(inputs, outputs) is expected


def test_merged_calls_give_each_request_its_own_outputs(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.token_model(), tmp_path / "tokens.onnx")
    sizes: list[int] = []
    with load(path, threads=1) as model:
        items = [
            feeds(b, seq=s, seed=i) for i, (b, s) in enumerate([(1, 2), (2, 2), (1, 5), (3, 2)])
        ]
        results = infer_batches(model.infer, items, limit=4, on_call=sizes.append)
        for item, result in zip(items, results, strict=True):
            assert isinstance(result, dict)
            alone = model.infer(item)
            assert all(np.array_equal(alone[k], result[k]) for k in alone)
    assert sorted(sizes) == [1, 3, 3]  # (1,2)+(2,2) merged, (1,5) alone, (3,2) alone


def test_a_failed_call_fails_only_its_requests() -> None:
    def infer(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if batch["ids"].shape[1] == 5:
            raise RuntimeError("seq 5 breaks")
        return {"sum": batch["ids"].sum(axis=1)}

    results = infer_batches(infer, [feeds(1), feeds(1, seq=5), feeds(2)], limit=8)
    assert isinstance(results[1], RuntimeError)
    assert [r["sum"].shape for r in (results[0], results[2])] == [(1,), (2,)]  # type: ignore[index]


def test_outputs_not_along_axis_0_run_one_by_one() -> None:
    calls = []

    def infer(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(batch["ids"].shape[0])
        return {"total": np.array([batch["ids"].sum()])}

    items = [feeds(1, seed=1), feeds(1, seed=2)]
    results = infer_batches(infer, items, limit=8)
    assert calls == [2, 1, 1]
    assert [r["total"][0] for r in results] == [i["ids"].sum() for i in items]  # type: ignore[index]


def _batcher_run(model_path: Path, **options: Any) -> tuple[list[Any], list[int]]:
    """Requests of 1 sample sent to a Batcher at once (and one more a little later)."""
    sizes: list[int] = []

    async def main() -> list[Any]:
        with load(model_path, threads=1) as model:
            batcher = Batcher(model.infer, on_call=sizes.append, **options)
            items = [feeds(1, seed=i) for i in range(6)]
            tasks = [asyncio.ensure_future(batcher(item)) for item in items]
            await asyncio.sleep(0.05)
            tasks.append(asyncio.ensure_future(batcher(feeds(1, seed=9))))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            batcher.close()
            for item, result in zip([*items, feeds(1, seed=9)], results, strict=True):
                if isinstance(result, dict):
                    alone = model.infer(item)
                    assert all(np.array_equal(alone[k], result[k]) for k in alone)
            return list(results)

    return asyncio.run(main()), sizes


def test_batcher_merges_what_waits_while_a_call_runs(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.token_model(), tmp_path / "tokens.onnx")
    results, sizes = _batcher_run(path, limit=4)
    assert all(isinstance(r, dict) for r in results)
    assert sizes[0] == 1 and sum(sizes) == 7 and max(sizes) == 4  # the first alone, then merged
    results, sizes = _batcher_run(path, limit=8, wait_s=0.5)
    assert sizes == [7]  # a lone request waits for company up to wait_s
    results, sizes = _batcher_run(path, limit=1)
    assert sizes == [1] * 7


def test_batcher_refuses_past_its_queue_bound(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.token_model(), tmp_path / "tokens.onnx")
    results, sizes = _batcher_run(path, limit=1, max_queued=2)
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 3 and "2 requests already wait" in str(refused[0])
    assert len(sizes) == 4  # the running one, two waiting and the late one
