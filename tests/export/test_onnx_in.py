"""ONNX in: an ONNX file from elsewhere as the export's source (``edgeport export model.onnx``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_helpers import edgeport_command
from export_models import two_input_example, two_input_module

from edgeport.export import export_onnx
from edgeport.export.onnx import save_model, torch_to_onnx
from edgeport.runtime import load
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_input_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TwoInputNet as a plain ONNX file (no edgeport metadata): an image and token ids in,
    ``scores`` and ``tokens`` out, the batch and the sequence length dynamic."""
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=128)
    example = two_input_example()
    graph = torch_to_onnx(
        two_input_module(),
        (torch.from_numpy(example["image"]), torch.from_numpy(example["ids"])),
        input_names=("image", "ids"),
        output_names=("scores", "tokens"),
        dynamic_shapes=({0: batch}, {0: batch, 1: seq}),
    )
    del graph.model.metadata_props[:]
    return save_model(graph.model, tmp_path_factory.mktemp("onnx_in") / "two_input.onnx")


def test_an_onnx_file_exports_to_fp16_and_int8_judged_against_itself(
    two_input_onnx: Path, two_input_calibration: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    manifest = export_onnx(
        two_input_onnx,
        out,
        precisions=("fp32", "fp16", "int8"),
        calibration=two_input_calibration,
        int8_targets=("onnxruntime",),
        keep_slow_int8=True,
        int8_fallback_rounds=0,
        int8_timing_s=0.2,
    )
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32", "onnx-fp16", "onnx-int8"]
    assert manifest.card.task == "other" and manifest.card.architecture == "two_input"
    assert manifest.export["source"] == {"kind": "onnx", "file": "two_input.onnx"}
    image, ids = manifest.card.inputs
    assert (image.name, image.shape) == ("image", ("batch", 3, 16, 16))
    assert (ids.name, ids.dtype, ids.shape) == ("ids", "int64", ("batch", "seq"))
    for art in manifest.artifacts:
        assert art.parity_passed is True, art.parity
        assert "ONNX Runtime CPU on the source two_input.onnx" in art.parity["reference"]
        assert [o["kind"] for o in art.parity["outputs"]] == ["tensor", "tensor"]
    int8 = manifest.artifact("onnx-int8")
    assert int8.target == "onnxruntime" and int8.quantization is not None
    # the shipped fp32 file is the source itself, with the card added
    source = ort.InferenceSession(str(two_input_onnx), providers=["CPUExecutionProvider"])
    feeds = two_input_example(batch=5, seq=11, seed=3)
    expected = source.run(None, feeds)
    with load(out, backend="onnxruntime-cpu", precision="fp32") as model:
        got = model.infer(feeds)
    assert np.array_equal(got["scores"], expected[0]) and np.array_equal(got["tokens"], expected[1])
    shipped = onnx.load(str(out / "model.fp32.onnx"))
    assert {p.key for p in shipped.metadata_props} >= {"edgeport.card", "edgeport.precision"}


def test_the_cli_exports_an_onnx_file(
    two_input_onnx: Path, two_input_calibration: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    proc = subprocess.run(
        edgeport_command(
            "export",
            str(two_input_onnx),
            "--precision",
            "fp16",
            "--parity-data",
            str(two_input_calibration),
            "--out",
            str(out),
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "onnx-fp16" in proc.stdout and "passed" in proc.stdout
    assert [a.name for a in Manifest.load(out).artifacts] == ["onnx-fp16"]


def test_onnx_in_refuses_what_it_cannot_check(two_input_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found \(expected a \.onnx file\)"):
        export_onnx(tmp_path / "missing.onnx", tmp_path / "a")
    with pytest.raises(ConfigError, match="dynamic axes besides the batch: give parity"):
        export_onnx(two_input_onnx, tmp_path / "b", precisions="fp16")
    with pytest.raises(ConfigError, match="int8 needs calibration data"):
        export_onnx(
            two_input_onnx,
            tmp_path / "c",
            precisions="int8",
            parity_inputs=two_input_example(batch=4),
        )
    assert not any(tmp_path.iterdir())
