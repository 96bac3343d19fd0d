"""No space left on the device: every command that writes ends in a typed error naming the path
(exit 1, no traceback) and leaves nothing half-written; a cache that cannot be written is no
cache. The disk is a real tmpfs of a few MB, filled to the last byte."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs
from faultlib import QUICK, edgeport, fill, run_on_openvino, tmpfs

NO_SPACE = "no space left on the device"


@pytest.fixture()
def full(tmp_path: Path) -> Path:
    """A 1 MB tmpfs with not one byte left."""
    with tmpfs(tmp_path / "full", "1m") as disk:
        fill(disk)
        yield disk


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return rt_bundles.gemm_bundle(tmp_path / "bundle", ("fp32", "int8"))


def _only_filler(folder: Path) -> None:
    """Nothing was left behind: no partial file, no temporary file (empty folders may be)."""
    left = [p.name for p in folder.rglob("*") if not p.is_dir() and p.name != "filler"]
    assert left == [], left


def test_run_out(bundle: Path, full: Path) -> None:
    done = edgeport("run", bundle, "--out", full / "out.npz")
    assert done.returncode == 1
    assert f"error: cannot write {full / 'out.npz'}: {NO_SPACE}" in done.stderr
    _only_filler(full)


def test_bench_json(bundle: Path, full: Path) -> None:
    done = edgeport(
        "bench", bundle, "--backend", "onnxruntime-cpu", "--batch", "1", *QUICK,
        "--json", full / "bench.json",
    )  # fmt: skip
    assert done.returncode == 1 and f"cannot write {full / 'bench.json'}: {NO_SPACE}" in done.stderr
    _only_filler(full)


def test_check_markdown(tmp_path: Path, full: Path) -> None:
    model = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "model.onnx")
    done = edgeport("check", model, "--backend", "onnxruntime-cpu", "--markdown", full / "c.md")
    assert done.returncode == 1 and f"cannot write {full / 'c.md'}: {NO_SPACE}" in done.stderr
    _only_filler(full)


def test_tune_record(bundle: Path, full: Path) -> None:
    done = edgeport(
        "tune", bundle, "--batch", "1", "--backend", "onnxruntime-cpu", *QUICK,
        env={"EDGEPORT_CACHE_DIR": str(full / "cache")},
    )  # fmt: skip
    assert done.returncode == 1
    assert "error: cannot save the tuning record" in done.stderr and NO_SPACE in done.stderr
    assert "--in-bundle" in done.stderr
    _only_filler(full)


def test_openvino_cache_on_a_full_disk_is_no_cache(bundle: Path, full: Path) -> None:
    pytest.importorskip("openvino")
    batch = rt_graphs.integer_batch(2)
    np.savez(full.parent / "in.npz", input=batch)
    for _ in range(2):  # the warning comes again in a new process, never a traceback
        env = {"EDGEPORT_CACHE_DIR": str(full / "cache")}
        done = run_on_openvino(bundle, full.parent / "in.npz", full.parent / "out.npz", env)
        assert done.stderr.count("not caching compiled models") == 1
        assert NO_SPACE in done.stderr
        assert np.array_equal(
            np.load(full.parent / "out.npz")["logits"], rt_graphs.gemm_reference(batch)
        )
    _only_filler(full)


@pytest.mark.slow
def test_export_runs_out_of_space_and_leaves_the_old_bundle(
    trained_run: Path, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "disk", "3m") as disk:
        old = rt_bundles.gemm_bundle(disk / "bundle")
        manifest = (old / "manifest.json").read_bytes()
        done = edgeport("export", trained_run, "--out", old, "--precision", "fp32,fp16,int8")
        assert done.returncode == 1, done.stderr
        assert f"error: cannot write the bundle {old}: {NO_SPACE}" in done.stderr
        assert "the bundle is left as it was" in done.stderr
        assert (old / "manifest.json").read_bytes() == manifest
        assert sorted(p.name for p in disk.iterdir()) == [".bundle.lock", "bundle"]


@pytest.mark.slow
def test_export_onto_a_bundle_that_is_a_mount_point(trained_run: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mounted", "8m") as mounted:
        done = edgeport("export", trained_run, "--out", mounted, "--precision", "fp32")
        assert done.returncode == 1, done.stderr
        assert f"error: cannot replace the bundle {mounted}: it is busy" in done.stderr
        assert f"--out {mounted / 'bundle'}" in done.stderr
        assert list(mounted.iterdir()) == []
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "mounted"]
        assert leftovers == [".mounted.lock"], leftovers
        inside = edgeport("export", trained_run, "--out", mounted / "bundle", "--precision", "fp32")
        assert inside.returncode == 0, inside.stderr
        assert json.loads((mounted / "bundle" / "manifest.json").read_text())["artifacts"]


def test_fill_leaves_no_space(tmp_path: Path) -> None:
    """The helper really fills the disk (else the tests above would test nothing)."""
    with tmpfs(tmp_path / "d", "1m") as disk:
        fill(disk)
        with pytest.raises(OSError) as info, (disk / "x").open("wb") as handle:
            handle.write(b"x" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
        assert info.value.errno == 28
        assert shutil.disk_usage(disk).free == 0
