"""Hypothesis profiles: ``ci`` (bounded, derandomized: part of ``make test``) and ``fuzz``
(``make fuzz``: random, EDGEPORT_FUZZ_EXAMPLES cases per reader)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness import write_stats
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,  # the harness bounds time itself, per call
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}
settings.register_profile("ci", max_examples=25, derandomize=True, **_COMMON)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("EDGEPORT_FUZZ_EXAMPLES", "2000")), **_COMMON
)
settings.load_profile(os.environ.get("EDGEPORT_FUZZ_PROFILE", "ci"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("EDGEPORT_FUZZ_STATS")
    if target:
        write_stats(Path(target))
