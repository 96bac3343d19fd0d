"""Shared test set-up: marker skips and the session-wide fixtures."""

from __future__ import annotations

import os

import pytest
from _env import cuda_gpu_reason, tensorrt_module_name

# Expensive session fixtures live in their own modules, one per distribution under test.
pytest_plugins = ["fixtures_train", "fixtures_export"]


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Caches edgeport writes (OpenVINO's compiled models, tuning records) go to a temporary
    directory, never the user's home."""
    os.environ["EDGEPORT_CACHE_DIR"] = str(tmp_path_factory.mktemp("edgeport-cache"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_reason = cuda_gpu_reason()
    trt_missing = tensorrt_module_name() is None
    for item in items:
        if gpu_reason and "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=gpu_reason))
        if trt_missing and "tensorrt" in item.keywords:
            item.add_marker(
                pytest.mark.skip(reason="neither tensorrt nor tensorrt_rtx is installed")
            )


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Exit with pytest's status once every report is written, skipping the interpreter's
    teardown: the native threads some engines leave behind (JAX under litert-torch, Ray, gRPC)
    can crash it after all tests have passed, turning a green run into a segfault."""
    if config.stash.get(_EXIT_STATUS, None) is None:
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash[_EXIT_STATUS])
