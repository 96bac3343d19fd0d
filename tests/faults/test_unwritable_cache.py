"""Caches edgeport cannot write: a read-only file system, a home folder that does not exist (and
cannot be made), a folder this process may not write. Loading still works, without the cache
and with one warning; only ``tune``, whose product is the record, fails, saying where else to
write it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs
from faultlib import QUICK, edgeport, run_on_openvino, tmpfs, unprivileged

WARNING = "not caching compiled models"


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    path = rt_bundles.gemm_bundle(tmp_path / "bundle", ("fp32",))
    np.savez(tmp_path / "in.npz", input=rt_graphs.integer_batch(3))
    return path


def _run_openvino(bundle: Path, env: dict[str, str], prefix: list[str] | None = None) -> str:
    """``edgeport run`` on OpenVINO: the right outputs, exit 0; its stderr."""
    out = bundle.parent / "out.npz"
    done = run_on_openvino(bundle, bundle.parent / "in.npz", out, env, prefix)
    assert np.array_equal(
        np.load(out)["logits"], rt_graphs.gemm_reference(rt_graphs.integer_batch(3))
    )
    return done.stderr


def test_read_only_cache(bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        err = _run_openvino(bundle, {"EDGEPORT_CACHE_DIR": str(ro / "cache")})
        assert err.count(WARNING) == 1 and "the file system is read-only" in err
        done = edgeport(
            "tune", bundle, "--batch", "1", "--backend", "onnxruntime-cpu", *QUICK,
            env={"EDGEPORT_CACHE_DIR": str(ro / "cache")},
        )  # fmt: skip
        assert done.returncode == 1
        assert "error: cannot save the tuning record" in done.stderr
        assert f"{ro / 'cache' / 'tuning'}: the file system is read-only" in done.stderr
        assert "timing batch" not in done.stderr  # refused before the minutes of timing


def test_a_home_that_does_not_exist(bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        env = {"HOME": str(ro / "nobody-home"), "EDGEPORT_CACHE_DIR": "", "XDG_CACHE_HOME": ""}
        err = _run_openvino(bundle, env)
        assert err.count(WARNING) == 1 and str(ro / "nobody-home" / ".cache") in err


def test_a_process_that_may_not_write_its_cache(bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    prefix = unprivileged()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    env = {"EDGEPORT_CACHE_DIR": str(locked / "cache")}
    err = _run_openvino(bundle, env, prefix)
    assert err.count(WARNING) == 1 and "permission denied" in err
    home = {"HOME": str(locked / "home"), "EDGEPORT_CACHE_DIR": "", "XDG_CACHE_HOME": ""}
    err = _run_openvino(bundle, home, prefix)
    assert err.count(WARNING) == 1 and "permission denied" in err
    tuned = edgeport(
        "tune", bundle, "--batch", "1", "--backend", "onnxruntime-cpu", *QUICK,
        env=env, prefix=prefix,
    )  # fmt: skip
    assert tuned.returncode == 1 and "permission denied" in tuned.stderr
    assert "EDGEPORT_CACHE_DIR" in tuned.stderr and "--in-bundle" in tuned.stderr
