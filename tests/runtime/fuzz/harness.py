"""The property every reader of untrusted input must keep, checked on each fuzz case.

``guarded(reader, name)(*args)`` calls the reader and allows exactly two outcomes: a result, or
an ``EdgeportError`` subclass. Anything else (a raw ``ValueError``, ``RecursionError``,
``MemoryError`` ...) fails the test, as does a call slower than ``TIME_BOUND_S`` or one whose
Python/numpy allocations peak above ``MEMORY_BOUND_BYTES`` (tracemalloc). Every case is counted
per reader; ``make fuzz`` prints and saves the counts.
"""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeport.runtime.errors import EdgeportError

TIME_BOUND_S = float(os.environ.get("EDGEPORT_FUZZ_TIME_BOUND_S", "10"))
MEMORY_BOUND_BYTES = 512 << 20
CASES: Counter[str] = Counter()
OUTCOMES: Counter[tuple[str, str]] = Counter()


def guarded(reader: Callable[..., Any], name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        CASES[name] += 1
        tracemalloc.start()
        start = time.perf_counter()
        try:
            result = reader(*args, **kwargs)
            OUTCOMES[(name, "ok")] += 1
        except EdgeportError as exc:
            OUTCOMES[(name, type(exc).__name__)] += 1
            result = exc
        finally:
            elapsed = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert elapsed <= TIME_BOUND_S, f"{name} took {elapsed:.1f} s (bound {TIME_BOUND_S} s)"
        assert peak <= MEMORY_BOUND_BYTES, f"{name} peaked at {peak / 2**20:.0f} MiB"
        return result

    return call


def write_stats(path: Path) -> dict[str, Any]:
    stats = {
        "cases": dict(CASES),
        "outcomes": {f"{reader}: {outcome}": n for (reader, outcome), n in OUTCOMES.items()},
        "time_bound_s": TIME_BOUND_S,
        "memory_bound_mib": MEMORY_BOUND_BYTES >> 20,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return stats
