"""Session fixtures for export: real bundles shared by every test that needs one.

- ``exported_bundle``: ``trained_run`` (simple_cnn_bn on digits) exported to ONNX fp32, fp16
  and int8, plus TensorRT engines when tensorrt or tensorrt_rtx is importable (tensorrt_rtx
  builds them on the CPU).
- ``bf16_bundle``: ``trained_run`` exported to fp32 and bf16 (judged on OpenVINO where the CPU
  has bf16).
- ``two_input_bundle``: ``export_models.TwoInputNet`` (an image and int64 token ids) through
  ``export_module`` to fp32/fp16/int8 calibrated on an .npz, with engines whose profile makes
  the batch and the sequence length dynamic.
- ``formats_bundle``: ``trained_run`` exported to every format but engines (ONNX, OpenVINO IR,
  ExecuTorch, LiteRT) at fp32 and int8, each gated on its own runtime.
- ``ssdlite_weights`` / ``ssdlite_bundle``: a realistic random-weight ssdlite320 saved as
  safetensors, and its fp32 bundle made by ``edgeport export torchvision:... --weights``.

Tests must not modify them: ``shutil.copytree`` one before damaging it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from _env import tensorrt_module_name

EXPORTED_PRECISIONS = ("fp32", "fp16", "int8")


def int8_options(tensorrt: bool) -> dict[str, object]:
    """The shared bundles keep their int8 files whatever they measure (small models are not
    faster in int8; the decision itself is tested in test_int8_decide.py), made for ONNX
    Runtime and, with engines, TensorRT."""
    return {
        "int8_targets": ("onnxruntime", "tensorrt") if tensorrt else ("onnxruntime",),
        "keep_slow_int8": True,
        "int8_fallback_rounds": 0,
        "int8_timing_s": 0.2,
    }


PHONE_FORMATS = ("onnx", "openvino", "executorch", "litert")
TWO_INPUT_PROFILE = {"ids": ((1, 1), (4, 16), (8, 64))}  # batch 1..8, seq 1..64
CALIBRATION_SAMPLES = 64
SSD = "torchvision:ssdlite320_mobilenet_v3_large"


def export_models() -> ModuleType:
    """tests/export/export_models.py, the models the export tests use."""
    here = str(Path(__file__).parent / "export")
    if here not in sys.path:
        sys.path.insert(0, here)
    import export_models

    return export_models


def edgeport_bin() -> str:
    return str(Path(sys.executable).with_name("edgeport"))


@pytest.fixture(scope="session")
def exported_bundle(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeport.export import export

    out = tmp_path_factory.mktemp("exported_bundle") / "bundle"
    tensorrt = tensorrt_module_name() is not None
    export(
        trained_run,
        out,
        precisions=EXPORTED_PRECISIONS,
        tensorrt=tensorrt,
        **int8_options(tensorrt),
    )
    return out


@pytest.fixture(scope="session")
def bf16_bundle(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``trained_run`` exported to fp32 and bf16 (the fp32 file run in bf16 on OpenVINO)."""
    from edgeport.export import export

    out = tmp_path_factory.mktemp("bf16_bundle") / "bundle"
    export(trained_run, out, precisions=("fp32", "bf16"))
    return out


@pytest.fixture(scope="session")
def formats_bundle(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeport.export import export

    out = tmp_path_factory.mktemp("formats_bundle") / "bundle"
    # int8 for ONNX Runtime and for OpenVINO (its IR is converted from that file), kept
    # whatever they measure
    options = {**int8_options(False), "int8_targets": ("onnxruntime", "openvino")}
    export(trained_run, out, precisions=("fp32", "int8"), formats=PHONE_FORMATS, **options)
    return out


@pytest.fixture(scope="session")
def two_input_calibration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 samples (ids over the whole vocabulary) in an .npz, one array per input."""
    path = tmp_path_factory.mktemp("calibration") / "calib.npz"
    np.savez(path, **export_models().two_input_example(CALIBRATION_SAMPLES, 7, seed=1))
    return path


@pytest.fixture(scope="session")
def two_input_bundle(two_input_calibration: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from torch.export import Dim

    from edgeport.export import export_module

    models = export_models()
    out = tmp_path_factory.mktemp("two_input") / "bundle"
    export_module(
        models.two_input_module(),
        models.two_input_example(),
        out,
        precisions=EXPORTED_PRECISIONS,
        output_names=("scores", "tokens"),
        dynamic_shapes={"image": {0: Dim("batch")}, "ids": {0: Dim("batch"), 1: Dim("seq")}},
        shapes=TWO_INPUT_PROFILE,
        calibration=two_input_calibration,
        tensorrt=tensorrt_module_name() is not None,
        **int8_options(tensorrt_module_name() is not None),
    )
    return out


@pytest.fixture(scope="session")
def ssdlite_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    from edgeport.train.checkpoint import state_dict_tensors

    path = tmp_path_factory.mktemp("ssdlite") / "ssdlite.safetensors"
    save_file(state_dict_tensors(export_models().realistic_ssdlite()), str(path))
    return path


@pytest.fixture(scope="session")
def ssdlite_bundle(ssdlite_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ssdlite_bundle") / "bundle"
    proc = subprocess.run(
        [edgeport_bin(), "export", SSD, "--weights", str(ssdlite_weights), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    return out
