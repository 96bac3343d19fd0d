"""One Model, many threads: every output equals the single-threaded reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import threads

from edgeport.runtime import load

THREADS = 8
CALLS = 200


def test_eight_threads_share_one_model(cnn_onnx: Path) -> None:
    """Each thread sends its own inputs (different batch sizes too), so crossed outputs between
    threads would be caught, not only corrupted ones."""
    rng = np.random.default_rng(0)
    inputs = [
        rng.standard_normal((1 + i % 3, 3, 32, 32)).astype(np.float32) for i in range(THREADS)
    ]
    with load(cnn_onnx, threads=1) as model:
        reference = [model.run(x) for x in inputs]
        mismatches: list[tuple[int, int]] = []

        def work(index: int) -> None:
            x, want = inputs[index], reference[index]
            for call in range(CALLS):
                if not np.array_equal(model.run(x), want):
                    mismatches.append((index, call))

        threads.run_concurrently(work, THREADS)
    assert mismatches == []
    assert len({r.shape for r in reference}) == 3


def test_predict_from_many_threads(cnn_onnx: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8) for i in range(THREADS)]
    with load(cnn_onnx, threads=1) as model:
        reference = [model.predict(img, top_k=3)[0] for img in images]
        results: dict[int, list[object]] = {i: [] for i in range(THREADS)}

        def work(index: int) -> None:
            for _ in range(20):
                results[index].append(model.predict(images[index], top_k=3)[0])

        threads.run_concurrently(work, THREADS)
    for index, got in results.items():
        assert got == [reference[index]] * 20
