"""The phone and microcontroller formats: OpenVINO IR, ExecuTorch .pte and LiteRT .tflite, made by
export, gated on their own runtimes, and loaded, checked, benchmarked and tuned like the others."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_export import PHONE_FORMATS
from torch import nn

from edgeport.export import export_module
from edgeport.export.settings import ExportSettings
from edgeport.runtime import load
from edgeport.runtime.bundle import Manifest, verify_artifact
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError, ExportError, ModelLoadError
from edgeport.runtime.reference import load_reference

PRECISIONS = ("fp32", "int8")
NEW_FORMATS = ("openvino", "executorch", "litert")


class LogCumSumExp(nn.Module):
    """A digits-sized model with an operator ONNX exports but ExecuTorch and LiteRT cannot
    lower (``aten.logcumsumexp``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.logcumsumexp(x, dim=1))


def test_formats_parse_in_canonical_order_and_tensorrt_is_a_format() -> None:
    settings = ExportSettings(formats="litert, onnx,executorch")
    assert settings.formats == ("onnx", "executorch", "litert")
    assert not settings.tensorrt
    assert ExportSettings(formats="onnx,tensorrt").tensorrt
    assert ExportSettings(tensorrt=True).formats == ("onnx", "tensorrt")
    with pytest.raises(ConfigError, match="unknown format 'coreml'; choose from onnx, tensorrt"):
        ExportSettings(formats="onnx,coreml")


@pytest.mark.slow
def test_every_format_and_precision_passes_its_gate(formats_bundle: Path) -> None:
    manifest = Manifest.load(formats_bundle)
    names = {a.name: a for a in manifest.artifacts}
    assert sorted(names) == sorted(f"{f}-{p}" for f in PHONE_FORMATS for p in PRECISIONS)
    assert manifest.export["formats"] == {"asked": list(PHONE_FORMATS), "failed": []}
    for fmt in NEW_FORMATS:
        for precision in PRECISIONS:
            art = names[f"{fmt}-{precision}"]
            assert art.format == fmt and art.target == fmt
            assert art.parity is not None and art.parity["status"] == "passed", art.parity
            assert art.parity["backend"] == fmt
            verify_artifact(formats_bundle, art)  # the file and, for IR, its weights
            logits = art.parity["outputs"][0]["comparison"]
            assert logits["top1_agreement"] >= 0.99 and logits["accuracy_drop"] <= 0.01
    assert list(names["openvino-fp32"].files) == ["model.fp32.bin"]
    assert names["openvino-int8"].source == "onnx-int8"
    assert "executorch" in names["executorch-int8"].tools
    assert "litert-torch" in names["litert-int8"].tools
    # the phone formats: ExecuTorch keeps the batch range, LiteRT is fixed at batch 1
    assert str(names["executorch-fp32"].batch) == "1:8:32"
    assert str(names["litert-fp32"].batch) == "1:1:1"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", NEW_FORMATS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_each_artifact_loads_on_its_runtime_and_predicts(
    formats_bundle: Path, fmt: str, precision: str
) -> None:
    stored = load_reference(formats_bundle, Manifest.load(formats_bundle))
    assert stored is not None
    images = next(iter(stored.inputs.values()))[:40]
    expected = next(iter(stored.outputs.values()))[:40].argmax(axis=1)
    with load(formats_bundle, backend=fmt, artifact=f"{fmt}-{precision}") as model:
        assert model.artifact is not None and model.artifact.name == f"{fmt}-{precision}"
        assert model.precision == precision
        logits = model.run_images(images)[0]  # split into batches the artifact takes
        predictions = model.predict([np.full((20, 20), 255, np.uint8)])
    assert logits.shape == (40, 10) and logits.dtype == np.float32
    assert (logits.argmax(axis=1) == expected).mean() >= 0.97
    assert predictions[0].labels[0] in Manifest.load(formats_bundle).card.class_names


@pytest.mark.slow
def test_executorch_runs_the_whole_batch_range(formats_bundle: Path) -> None:
    """The largest batch the bundle declares (32) runs: the export restored the range the
    XNNPACK lowering narrowed."""
    card = Manifest.load(formats_bundle).card
    shape = (32, card.in_channels, *card.input_size)
    batch = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    with (
        load(formats_bundle, backend="executorch", precision="fp32") as pte,
        load(formats_bundle, backend="onnxruntime-cpu", precision="fp32") as onnx,
    ):
        np.testing.assert_allclose(pte.run(batch), onnx.run(batch), atol=1e-4)


@pytest.mark.slow
def test_modified_ir_weights_are_refused(formats_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(formats_bundle, bundle)
    weights = bundle / "model.fp32.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match=r"model\.fp32\.bin has sha256 .* was modified"):
        load(bundle, backend="openvino", artifact="openvino-fp32")


@pytest.mark.slow
def test_check_bench_and_tune_take_the_new_backends(
    formats_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "check.json"
    code = main(
        [
            "check",
            str(formats_bundle),
            "--reference",
            "stored",
            "--backend",
            "litert,executorch,openvino",
            "--json",
            str(report),
        ]
    )
    checks = json.loads(report.read_text())["checks"]
    assert code == 0, capsys.readouterr()
    ran = {(c["artifact"], c["backend"]) for c in checks if c["status"] == "passed"}
    for fmt in NEW_FORMATS:
        assert {(f"{fmt}-fp32", fmt), (f"{fmt}-int8", fmt)} <= ran
    assert ("onnx-fp32", "openvino") in ran  # OpenVINO runs both ONNX and its IR

    from edgeport.runtime.tools.bench import BenchSettings, benchmark
    from edgeport.runtime.tools.timing import TimingConfig
    from edgeport.runtime.tools.tune import TuneSettings, candidates

    result = benchmark(
        formats_bundle,
        BenchSettings(
            backends=("litert", "executorch"),
            batches=(1,),
            baselines=(),
            timing=TimingConfig(warmup_s=0.05, duration_s=0.1),
        ),
    )
    rows = {(r.backend, r.artifact) for r in result.rows}
    assert rows == {(f, f"{f}-{p}") for f in ("litert", "executorch") for p in PRECISIONS}
    chosen, _ = candidates(formats_bundle, Manifest.load(formats_bundle), TuneSettings())
    pairs = {(b, a.name) for b, a in chosen}
    assert ("litert", "litert-int8") in pairs and ("executorch", "executorch-fp32") in pairs
    assert ("openvino", "openvino-int8") in pairs


@pytest.mark.slow
def test_a_failing_converter_is_recorded_and_the_rest_written(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    manifest = export_module(
        LogCumSumExp().eval(),
        torch.randn(2, 16),
        out,
        formats=("onnx", "openvino", "executorch", "litert"),
    )
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32", "openvino-fp32"]
    failed = {f["artifact"]: f for f in manifest.export["formats"]["failed"]}
    assert sorted(failed) == ["executorch-fp32", "litert-fp32"]
    assert "logcumsumexp" in failed["litert-fp32"]["error"]
    assert Manifest.load(out).export["formats"]["failed"] == list(failed.values())
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pte", ".tflite")) == []
    with load(out, backend="openvino", artifact="openvino-fp32") as model:
        assert model.run(np.ones((1, 16), np.float32)).shape == (1, 4)

    alone = tmp_path / "alone"
    with pytest.raises(ExportError, match=r"litert-fp32 failed: .*logcumsumexp"):
        export_module(LogCumSumExp().eval(), torch.randn(2, 16), alone, formats=("litert",))
    assert not alone.exists()
