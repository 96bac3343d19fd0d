"""Running a test's work on several threads at once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def run_concurrently(work: Callable[[int], None], threads: int) -> None:
    """Start ``work(0..threads-1)`` together; an exception in any thread fails the test."""
    start = threading.Barrier(threads)

    def target(index: int) -> None:
        start.wait(timeout=60)
        work(index)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(target, i) for i in range(threads)]
        for future in futures:
            future.result(timeout=300)
