"""The OpenVINO compiled-model cache is verified before use: a blob with flipped bytes, cut
short, replaced by random bytes, a folder or a FIFO is never imported; the model is compiled
again (the right outputs) and the entry replaced. Loads run in new processes under a timeout,
so a blocked open fails the test instead of hanging it."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
from faultlib import run_on_openvino

pytest.importorskip("openvino")

CNN_INPUT = (2, 3, 32, 32)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, np.ndarray]:
    """A small CNN bundle (its compiled blob is large enough to damage in the middle), an
    input file, a cache holding its compiled model, and the outputs."""
    tmp = tmp_path_factory.mktemp("cnn")
    root = rt_bundles.cnn_bundle(tmp / "bundle")
    inputs = tmp / "in.npz"
    np.savez(inputs, input=np.random.default_rng(0).standard_normal(CNN_INPUT, np.float32))
    first, _ = _run(root, inputs, tmp / "cache", tmp / "first.npz")
    hit, err = _run(root, inputs, tmp / "cache", tmp / "hit.npz")
    assert np.array_equal(hit, first) and "compiling again" not in err
    return root, inputs, tmp / "cache", first


def _run(bundle: Path, inputs: Path, cache: Path, out: Path) -> tuple[np.ndarray, str]:
    done = run_on_openvino(bundle, inputs, out, {"EDGEPORT_CACHE_DIR": str(cache)})
    return np.load(out)["logits"], done.stderr


def _flip(blob: Path, count: int) -> None:
    data = bytearray(blob.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    blob.write_bytes(bytes(data))


def _truncate(blob: Path) -> None:
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])


def _random(blob: Path) -> None:
    blob.write_bytes(os.urandom(blob.stat().st_size))


def _folder(blob: Path) -> None:
    blob.unlink()
    blob.mkdir()


def _fifo(blob: Path) -> None:
    blob.unlink()
    os.mkfifo(blob)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda b: _flip(b, 64), "does not match the sha256 recorded when it was written"),
        (lambda b: _flip(b, 4096), "does not match the sha256 recorded when it was written"),
        (_truncate, "does not match the sha256 recorded when it was written"),
        (_random, "does not match the sha256 recorded when it was written"),
        (_folder, "is a directory"),
        (_fifo, "is not a regular file (FIFO, socket or device)"),
    ],
    ids=["flip-64", "flip-4096", "truncated", "random", "folder", "fifo"],
)
def test_a_damaged_entry_is_never_imported(
    cnn: tuple[Path, Path, Path, np.ndarray], tmp_path: Path, damage: object, why: str
) -> None:
    bundle, inputs, warm, first = cnn
    cache = shutil.copytree(warm, tmp_path / "cache")
    (blob,) = (cache / "openvino").glob("*.blob")
    damage(blob)  # type: ignore[operator]
    again, err = _run(bundle, inputs, cache, tmp_path / "a.npz")
    assert np.array_equal(again, first)
    assert why in err and "compiling again" in err
    if blob.is_dir():
        shutil.rmtree(blob)  # a folder cannot be renamed over; once removed, it is cached again
        _run(bundle, inputs, cache, tmp_path / "b.npz")
    assert blob.is_file()  # replaced by a good entry
    healed, err = _run(bundle, inputs, cache, tmp_path / "c.npz")
    assert np.array_equal(healed, first) and "compiling again" not in err


def test_the_entry_carries_the_hash_of_its_blob(cnn: tuple[Path, Path, Path, np.ndarray]) -> None:
    from edgeport.runtime.backends.compiled_cache import MAGIC

    (blob,) = (cnn[2] / "openvino").glob("*.blob")
    data = blob.read_bytes()
    start = len(MAGIC)
    assert data[:start] == MAGIC and data[start + 64 : start + 65] == b"\n"
    assert data[start : start + 64].decode() == hashlib.sha256(data[start + 65 :]).hexdigest()
