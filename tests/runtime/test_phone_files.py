"""ExecuTorch .pte and LiteRT .tflite files made by their own converters, not by edgeport: they
load, check (against another file of the same model) and bench on their own, as an .onnx does."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgeport.runtime import load
from edgeport.runtime.backends.litert import _dequantize, _quantize, _Tensor
from edgeport.runtime.backends.registry import (
    ModelFile,
    candidate_unavailable_reason,
    runs_format,
)
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.tools.check import check

SHAPE = (1, 3, 16, 16)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(y.flatten(1))


@pytest.fixture(scope="module")
def direct_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same seeded TinyNet as .onnx (torch.onnx), .pte (ExecuTorch's own export and XNNPACK
    lowering) and .tflite (litert-torch), each written by its converter."""
    import litert_torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(0)
    model = TinyNet().eval()
    example = (torch.randn(*SHAPE),)
    root = tmp_path_factory.mktemp("direct")
    files = {"onnx": root / "tiny.onnx", "pte": root / "tiny.pte", "tflite": root / "tiny.tflite"}
    torch.onnx.export(model, example, files["onnx"], dynamo=True, input_names=["input"])
    program = torch.export.export(model, example)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    files["pte"].write_bytes(lowered.to_executorch().buffer)
    logging.getLogger().setLevel(logging.WARNING)  # litert-torch logs every lowering at INFO
    litert_torch.convert(model, example).export(str(files["tflite"]))
    return files


def test_registry_knows_which_backend_runs_which_format() -> None:
    assert runs_format("openvino", "onnx") and runs_format("openvino", "openvino")
    assert runs_format("litert", "litert") and not runs_format("litert", "onnx")
    cand = ModelFile("executorch", "fp32", Path("m.pte"), "m.pte")
    assert candidate_unavailable_reason("onnxruntime-cpu", cand) == (
        "onnxruntime-cpu runs onnx files, this is executorch"
    )


def test_litert_quantized_io_round_trips_through_the_files_scale() -> None:
    tensor = _Tensor(0, np.dtype(np.int8), (0.05, 3))
    values = np.array([-10.0, -1.0, 0.0, 0.26, 6.2, 10.0], np.float32)
    quantized = _quantize(values, tensor)
    assert quantized.dtype == np.int8
    assert quantized.tolist() == [-128, -17, 3, 8, 127, 127]  # clipped at the int8 range
    np.testing.assert_allclose(_dequantize(quantized, tensor)[1:4], [-1.0, 0.0, 0.25])


@pytest.mark.slow
@pytest.mark.parametrize(("key", "backend"), [("pte", "executorch"), ("tflite", "litert")])
def test_a_direct_file_loads_and_matches_onnx_runtime(
    direct_files: dict[str, Path], key: str, backend: str
) -> None:
    batch = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    with load(direct_files["onnx"], backend="onnxruntime-cpu") as reference:
        expected = reference.run(batch)
    with load(direct_files[key]) as model:
        assert model.backend == backend and model.card is None
        assert model.inputs[0].shape[1:] == SHAPE[1:]
        np.testing.assert_allclose(model.run(batch), expected, atol=1e-5)
        assert "needs" in model.describe() or backend == "litert"


@pytest.mark.slow
def test_a_direct_file_checks_against_another_file_of_the_model(
    direct_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = check(direct_files["pte"], reference_model=direct_files["onnx"], samples=3)
    assert report.passed, report.verdict
    (verdict,) = report.checks
    assert verdict.backend == "executorch" and verdict.count == 3
    assert report.reference is not None and report.reference.kind == "onnxruntime-cpu"

    out = tmp_path / "check.json"
    tflite, pte = str(direct_files["tflite"]), str(direct_files["pte"])
    code = main(["check", tflite, "--reference-model", pte, "--json", str(out)])
    assert code == 0, capsys.readouterr()
    data = json.loads(out.read_text())
    assert data["reference"]["kind"] == "executorch"
    assert [(c["backend"], c["status"]) for c in data["checks"]] == [("litert", "passed")]

    with pytest.raises(ConfigError, match=r"runs on one runtime only \(litert\): give --reference"):
        check(direct_files["tflite"])


@pytest.mark.slow
@pytest.mark.parametrize(("key", "backend"), [("pte", "executorch"), ("tflite", "litert")])
def test_a_direct_file_benches_and_inspects(
    direct_files: dict[str, Path], key: str, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(direct_files[key])
    args = ["bench", path, "--batch", "1", "--warmup-s", "0.05", "--duration-s", "0.1"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert backend in printed and "p50" in printed
    assert main(["inspect", path]) == 0
    printed = capsys.readouterr().out
    assert f"{backend}: can run here" in printed
    assert "executorch: available (needs the executorch package and torch" in printed
