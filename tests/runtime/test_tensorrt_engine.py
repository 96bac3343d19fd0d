"""TensorRT engines: provenance checks, the library's own verdict, and clear refusals.

These build real engines with the installed TensorRT module (tensorrt_rtx builds on a CPU) and
exercise everything that does not need a GPU. Running engines on a GPU is in test_gpu_backends.py.
"""

from __future__ import annotations

import importlib
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_bundles
import rt_engines
import rt_graphs
from _env import tensorrt_module_name

from edgeport.runtime import load
from edgeport.runtime.backends.cuda import GpuDevice, probe_gpus
from edgeport.runtime.backends.tensorrt import (
    check_plan,
    engine_mismatch,
    read_plan,
    static_unavailable_reason,
    supported_compute_capabilities,
)
from edgeport.runtime.bundle import EngineInfo, Manifest
from edgeport.runtime.errors import BackendUnavailable, ModelLoadError

NO_GPU = probe_gpus().reason
needs_no_gpu = pytest.mark.skipif(NO_GPU is None, reason="a GPU is present: covered by gpu tests")

H100 = GpuDevice(0, "NVIDIA H100 80GB HBM3", "9.0", 80 << 30)
RTX4090 = GpuDevice(0, "NVIDIA GeForce RTX 4090", "8.9", 24 << 30)
T4 = GpuDevice(0, "Tesla T4", "7.5", 16 << 30)


# -- pure provenance rules (no TensorRT needed) ----------------------------------------------


def info(**overrides: Any) -> EngineInfo:
    fields: dict[str, Any] = {
        "flavour": "tensorrt",
        "version": "10.13.3.9",
        "compute_capability": "9.0",
    }
    fields.update(overrides)
    return EngineInfo(**fields)


def test_matching_engine_is_accepted() -> None:
    assert engine_mismatch(info(), flavour="tensorrt", version="10.13.3.9", device=H100) is None


@pytest.mark.parametrize(
    ("engine", "flavour", "version", "device", "pattern"),
    [
        (
            info(),
            "tensorrt_rtx",
            "1.7.1.116",
            H100,
            r"built with tensorrt 10\.13\.3\.9, but this machine runs tensorrt_rtx",
        ),
        (
            info(),
            "tensorrt",
            "10.13.2.6",
            H100,
            r"same version: rebuild the engine on this machine",
        ),
        (info(), "tensorrt", "11.0.0.1", None, r"same version"),
        (
            info(compute_capability="8.6"),
            "tensorrt",
            "10.13.3.9",
            H100,
            r"built for compute capability 8\.6, but this GPU \(NVIDIA H100.*\) "
            r"has compute capability 9\.0: rebuild",
        ),
        (
            info(hardware_compatibility="ampere_plus", compute_capability=None),
            "tensorrt",
            "10.13.3.9",
            T4,
            r"Ampere or newer \(>= 8\.0\), but this GPU \(Tesla T4\)",
        ),
    ],
)
def test_mismatches_say_to_rebuild(
    engine: EngineInfo, flavour: str, version: str, device: GpuDevice | None, pattern: str
) -> None:
    reason = engine_mismatch(engine, flavour=flavour, version=version, device=device)
    assert reason is not None
    assert re.search(pattern, reason), reason


def test_rtx_engine_built_for_several_gpus() -> None:
    engine = info(flavour="tensorrt_rtx", version="1.7.1.116", compute_capability="8.6,8.9")
    kwargs: dict[str, Any] = {"flavour": "tensorrt_rtx", "version": "1.7.1.116"}
    assert engine_mismatch(engine, device=RTX4090, **kwargs) is None
    reason = engine_mismatch(engine, device=T4, **kwargs)
    assert reason is not None and "built for compute capability 8.6,8.9" in reason


def test_hardware_compatible_engine_without_a_recorded_capability_is_left_to_tensorrt() -> None:
    engine = info(hardware_compatibility="same_compute_capability", compute_capability=None)
    assert engine_mismatch(engine, flavour="tensorrt", version="10.13.3.9", device=T4) is None


def test_ampere_plus_engine_runs_on_newer_gpus() -> None:
    engine = info(hardware_compatibility="ampere_plus", compute_capability=None)
    for device in (H100, RTX4090):
        assert (
            engine_mismatch(engine, flavour="tensorrt", version="10.13.3.9", device=device) is None
        )


def test_rtx_engine_for_no_particular_gpu_needs_a_supported_one() -> None:
    engine = info(flavour="tensorrt_rtx", version="1.7.1.116", compute_capability=None)
    supported = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
    kwargs: dict[str, Any] = {
        "flavour": "tensorrt_rtx",
        "version": "1.7.1.116",
        "supported": supported,
    }
    assert engine_mismatch(engine, device=RTX4090, **kwargs) is None
    reason = engine_mismatch(engine, device=H100, **kwargs)
    assert reason is not None
    assert "runs on compute capabilities 7.5, 8.0, 8.6, 8.9, 12.0, 12.1" in reason
    assert "NVIDIA H100" in reason and "full TensorRT" in reason


# -- with a real engine built here -----------------------------------------------------------


@pytest.fixture(scope="module")
def trt_module() -> Any:
    name = tensorrt_module_name()
    if name is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed")
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def engine_bundle(tmp_path_factory: pytest.TempPathFactory, trt_module: Any) -> Path:
    """A gemm bundle with onnx-fp32 and a real tensorrt-fp32 engine (batch 1:4:16)."""
    flavour = trt_module.__name__
    gpus = probe_gpus()
    cc = None if flavour == "tensorrt_rtx" or gpus.reason else gpus.devices[0].compute_capability
    engine_info = EngineInfo(flavour=flavour, version=trt_module.__version__, compute_capability=cc)
    root = tmp_path_factory.mktemp("engine") / "bundle"
    card = rt_graphs.make_card(num_classes=3)
    return rt_engines.engine_bundle(
        root, rt_graphs.gemm_model(), card, engine_info, parity=rt_bundles.passed()
    )


def engine_path(bundle: Path) -> Path:
    return next(bundle.glob("*.engine"))


def with_engine_info(bundle: Path, tmp_path: Path, **changes: str) -> Path:
    copy = shutil.copytree(bundle, tmp_path / "copy")

    def edit(data: dict[str, Any]) -> None:
        for art in data["artifacts"]:
            if art["engine"]:
                art["engine"].update(changes)

    rt_bundles.rewrite_manifest(copy, edit)
    return copy


@pytest.mark.tensorrt
def test_rtx_lists_the_gpus_it_supports(trt_module: Any) -> None:
    supported = supported_compute_capabilities(trt_module)
    if trt_module.__name__ != "tensorrt_rtx":
        assert supported is None
        return
    assert supported is not None and "8.9" in supported and "7.5" in supported
    assert "9.0" not in supported  # TensorRT-RTX builds no engines for Hopper


@pytest.mark.tensorrt
def test_version_mismatch_is_refused_before_deserializing(
    engine_bundle: Path, tmp_path: Path
) -> None:
    bundle = with_engine_info(engine_bundle, tmp_path, version="0.9.0")
    with pytest.raises(
        BackendUnavailable,
        match=r"built with .* 0\.9\.0, but this machine has .* same version: "
        r"rebuild the engine on this machine",
    ):
        load(bundle, backend="tensorrt")
    (engine,) = [a.engine for a in Manifest.load(bundle).artifacts if a.engine]
    reason = static_unavailable_reason(engine)
    assert reason is not None and "same version" in reason


@pytest.mark.tensorrt
def test_flavour_mismatch_is_refused(engine_bundle: Path, tmp_path: Path, trt_module: Any) -> None:
    other = "tensorrt" if trt_module.__name__ == "tensorrt_rtx" else "tensorrt_rtx"
    bundle = with_engine_info(engine_bundle, tmp_path, flavour=other)
    with pytest.raises(
        BackendUnavailable, match=rf"built with {other} .*rebuild the engine on this machine"
    ):
        load(bundle, backend="tensorrt")


@pytest.mark.tensorrt
def test_version_mismatch_is_also_found_for_an_engine_file_next_to_its_manifest(
    engine_bundle: Path, tmp_path: Path
) -> None:
    bundle = with_engine_info(engine_bundle, tmp_path, version="0.9.0")
    with pytest.raises(BackendUnavailable, match="same version"):
        load(engine_path(bundle))


@pytest.mark.tensorrt
@needs_no_gpu
def test_engine_without_gpu_says_why(engine_bundle: Path) -> None:
    with pytest.raises(BackendUnavailable) as excinfo:
        load(engine_bundle, backend="tensorrt")
    message = str(excinfo.value)
    assert "tensorrt [tensorrt-fp32, fp32]: skipped" in message
    assert NO_GPU is not None and NO_GPU in message


@pytest.mark.tensorrt
@needs_no_gpu
def test_auto_falls_back_to_onnx_and_says_why(engine_bundle: Path) -> None:
    with load(engine_bundle, threads=1) as model:
        assert model.backend == "onnxruntime-cpu"
        assert model.artifact is not None and model.artifact.name == "onnx-fp32"
        skipped = [a for a in model.attempts if a.backend == "tensorrt"]
        batch = np.ones((2, 1, 2, 2), np.float32)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
    assert [a.target for a in skipped] == ["tensorrt-fp32"]
    assert NO_GPU is not None
    assert skipped[0].status == "skipped" and NO_GPU in skipped[0].why


@pytest.mark.tensorrt
@needs_no_gpu
def test_standalone_engine_without_gpu(engine_bundle: Path, tmp_path: Path) -> None:
    alone = tmp_path / "model.fp16.plan"
    shutil.copy(engine_path(engine_bundle), alone)
    with pytest.raises(
        BackendUnavailable, match=r"tensorrt \[model\.fp16\.plan, fp16\]: skipped: .*GPU"
    ):
        load(alone)


@pytest.mark.tensorrt
def test_malformed_engine_is_reported_by_the_library(
    engine_bundle: Path, tmp_path: Path, trt_module: Any
) -> None:
    if not hasattr(trt_module.Runtime, "get_engine_validity"):
        pytest.skip(f"{trt_module.__name__} has no Runtime.get_engine_validity")
    damaged = tmp_path / "damaged.engine"
    damaged.write_bytes(engine_path(engine_bundle).read_bytes()[:40])
    verdict = check_plan(damaged)
    assert verdict.state == "invalid" and verdict.malformed
    assert "MALFORMED_ENGINE" in str(verdict)
    with pytest.raises(ModelLoadError, match=r"reports the engine .*damaged\.engine as malformed"):
        load(damaged)  # refused as a bad file, GPU or not


def test_empty_engine_file(tmp_path: Path) -> None:
    """Refused as a bad file before any TensorRT library is needed."""
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"is empty \(0 bytes\)"):
        read_plan(empty)
    with pytest.raises(ModelLoadError, match=r"engine file .*empty\.engine is empty"):
        load(empty)


@pytest.mark.tensorrt
def test_real_engine_verdict(engine_bundle: Path, trt_module: Any) -> None:
    verdict = check_plan(engine_path(engine_bundle))
    if not hasattr(trt_module.Runtime, "get_engine_validity"):
        assert verdict.state == "unknown"
        return
    assert not verdict.malformed
    if NO_GPU is not None:
        assert verdict.state == "invalid"  # nothing to run it on
