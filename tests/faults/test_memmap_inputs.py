"""Inputs that live in files: ``np.memmap``, ``np.load(..., mmap_mode="r")`` and other ndarray
subclasses of the right shape and dtype are run as they are (viewed as plain arrays, no copy);
a wrong one gets a message that says what is wrong, and a masked array is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.errors import InputError

BACKENDS = ["onnxruntime-cpu", "openvino"]


@pytest.fixture(scope="module")
def gemm_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rt_bundles.gemm_bundle(tmp_path_factory.mktemp("gemm") / "bundle")


@pytest.fixture()
def stored(tmp_path: Path) -> Path:
    path = tmp_path / "batch.npy"
    np.save(path, rt_graphs.integer_batch(4))
    return path


def _mapped(stored: Path) -> list[np.ndarray]:
    offset = 128  # the .npy header of a small array
    return [
        np.load(stored, mmap_mode="r"),
        np.load(stored, mmap_mode="c"),
        np.memmap(stored, np.float32, "r", offset=offset, shape=(4, 1, 2, 2)),
        rt_graphs.integer_batch(4).view(Tagged),
    ]


class Tagged(np.ndarray):
    """An ndarray subclass of a user's own."""


@pytest.mark.parametrize("backend", BACKENDS)
def test_run_and_infer_take_mapped_arrays(
    gemm_bundle_dir: Path, stored: Path, backend: str
) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    want = rt_graphs.gemm_reference(rt_graphs.integer_batch(4))
    with load(gemm_bundle_dir, backend=backend, threads=1) as model:
        for array in _mapped(stored):
            assert type(array) is not np.ndarray
            assert np.array_equal(model.run(array), want), type(array)
            assert np.array_equal(model.infer(array)["logits"], want)
            assert np.array_equal(model.infer({"input": array})["logits"], want)


def test_no_copy_is_made(gemm_bundle_dir: Path, stored: Path) -> None:
    with load(gemm_bundle_dir, threads=1) as model:
        mapped = np.load(stored, mmap_mode="r")
        fed = model.validate({"input": mapped})["input"]
        assert type(fed) is np.ndarray and np.shares_memory(fed, mapped)


def test_a_wrong_mapped_array_is_named_exactly(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "wide.npy"
    np.save(path, np.zeros((4, 1, 3, 3), np.float32))
    with load(gemm_bundle_dir, threads=1) as model:
        with pytest.raises(InputError, match=r"expected height x width 2x2, got 3x3"):
            model.run(np.load(path, mmap_mode="r"))
        ints = np.load(path, mmap_mode="r").astype(np.int32)
        with pytest.raises(InputError, match=r"expected dtype float32, got int32"):
            model.run(ints)
        with pytest.raises(InputError, match="masked array"):
            model.run(np.ma.masked_array(rt_graphs.integer_batch(2), mask=False))
