"""The phone and microcontroller formats: OpenVINO IR, ExecuTorch .pte and LiteRT .tflite, made by
export, gated on their own runtimes, and loaded, checked, benchmarked and tuned like the others."""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from fixtures_export import PHONE_FORMATS
from torch import nn

from edgeport.export import export_module
from edgeport.export.settings import ExportSettings
from edgeport.runtime import load
from edgeport.runtime.backends.base import Backend
from edgeport.runtime.bundle import Manifest, SideFile, verify_artifact
from edgeport.runtime.cli import main
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    ExportError,
    IntegrityError,
    ParityError,
)
from edgeport.runtime.reference import load_reference
from edgeport.runtime.source import read_model_bytes, resolve_source

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
    expected = [f"{f}-{p}" for f in PHONE_FORMATS for p in PRECISIONS] + ["onnx-int8-openvino"]
    assert sorted(names) == sorted(expected)
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
    assert names["openvino-int8"].source == "onnx-int8-openvino"  # NNCF's file, as IR
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


def copied(formats_bundle: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(formats_bundle, bundle)
    return bundle


@pytest.mark.slow
@pytest.mark.parametrize(
    ("artifact", "file", "damage", "match"),
    [
        ("openvino-fp32", "model.fp32.bin", "flip", r"model\.fp32\.bin has sha256 .* was modified"),
        ("openvino-fp32", "model.fp32.bin", "cut", r"model\.fp32\.bin has \d+ bytes, the manifest"),
        ("openvino-int8", "model.int8.xml", "flip", r"model\.int8\.xml has sha256 .* was modified"),
        ("executorch-int8", "model.int8.pte", "flip", r"model\.int8\.pte has sha256"),
        ("litert-fp32", "model.fp32.tflite", "cut", r"model\.fp32\.tflite has \d+ bytes"),
    ],
)
def test_a_changed_file_of_any_format_is_refused(
    formats_bundle: Path, tmp_path: Path, artifact: str, file: str, damage: str, match: str
) -> None:
    """Each file an artifact needs (an IR's weights too) is checked, size and sha256."""
    bundle = copied(formats_bundle, tmp_path)
    path = bundle / file
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[100] ^= 0xFF
    path.write_bytes(bytes(data[:-1] if damage == "cut" else data))
    backend = artifact.split("-")[0]
    with pytest.raises(IntegrityError, match=match):
        load(bundle, backend=backend, artifact=artifact)
    with pytest.raises(IntegrityError, match=match):
        verify_artifact(bundle, Manifest.load(bundle).artifact(artifact))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", NEW_FORMATS)
def test_each_runtime_runs_the_bytes_that_were_verified(
    formats_bundle: Path, tmp_path: Path, fmt: str
) -> None:
    """The engine gets the bytes that were read and hashed, never the path again: the files
    overwritten once they were checked change nothing."""
    from edgeport.runtime.backends.executorch import ExecuTorchBackend
    from edgeport.runtime.backends.litert import LiteRtBackend
    from edgeport.runtime.backends.openvino import OpenVinoBackend, OpenVinoSettings

    bundle = copied(formats_bundle, tmp_path)
    (cand,) = (c for c in resolve_source(bundle).candidates if c.label == f"{fmt}-fp32")
    assert cand.artifact is not None
    read = read_model_bytes(cand, verify=True)
    assert len(read.side_files) == len(cand.artifact.files)
    for path in (cand.path, *(bundle / rel for rel in cand.artifact.files)):
        path.write_bytes(bytes(path.stat().st_size))  # same size, all zeros
    backend: Backend
    if fmt == "litert":
        backend = LiteRtBackend(read)
    elif fmt == "executorch":
        backend = ExecuTorchBackend(read)
    else:
        backend = OpenVinoBackend(read, OpenVinoSettings(cache_dir=None))
    del read
    gc.collect()  # the engine keeps what it runs from
    stored = load_reference(formats_bundle, Manifest.load(formats_bundle))
    assert stored is not None
    image = next(iter(stored.inputs.values()))
    with load(formats_bundle, backend="onnxruntime-cpu", precision="fp32") as onnx:
        expected = onnx.run(image[:1])
    np.testing.assert_allclose(backend.infer([image[:1]])[0], expected, atol=1e-4)
    backend.close()
    with pytest.raises(IntegrityError):
        load(bundle, artifact=f"{fmt}-fp32")


@pytest.mark.slow
def test_the_compiled_cache_key_covers_ir_weights(formats_bundle: Path, tmp_path: Path) -> None:
    """Other weights under the same .xml are another compiled model, not a cache hit."""
    bundle = copied(formats_bundle, tmp_path)
    options = {"cache_dir": str(tmp_path / "cache")}
    states, outputs = [], []
    for step in range(3):
        if step == 2:
            _rewrite_last_f32_constant(bundle, "openvino-fp32", 100.0)
        with load(
            bundle, backend="openvino", artifact="openvino-fp32", backend_options=options
        ) as model:
            states.append(model.describe()["compiled_cache"])
            outputs.append(model.run(np.zeros((1, *model.input_shape), np.float32)))
    assert states == ["miss (stored)", "verified hit", "miss (stored)"]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.allclose(outputs[2], outputs[0], atol=1.0)


def _rewrite_last_f32_constant(bundle: Path, name: str, value: float) -> None:
    """Set the first value of the IR's last float32 constant (a bias of the last layer) in its
    weights, and record the new weights in the manifest: a genuine, other model."""
    manifest = Manifest.load(bundle)
    art = manifest.artifact(name)
    ((rel, _),) = art.files.items()
    consts = [
        d.attrib
        for d in ElementTree.parse(bundle / art.path).iter("data")
        if d.attrib.get("element_type") == "f32" and "offset" in d.attrib
    ]
    offset = int(consts[-1]["offset"])
    weights = bytearray((bundle / rel).read_bytes())
    weights[offset : offset + 4] = np.float32(value).tobytes()
    (bundle / rel).write_bytes(bytes(weights))
    entry = SideFile(hashlib.sha256(weights).hexdigest(), len(weights))
    manifest.with_artifact(replace(art, files={rel: entry})).save(bundle)


@pytest.mark.slow
def test_the_trust_rule_holds_for_the_new_formats(formats_bundle: Path, tmp_path: Path) -> None:
    """A failed phone artifact is not run by auto nor by name without allow_failed, and tune
    leaves it out; an ONNX int8 made for ONNX Runtime is not offered to OpenVINO."""
    from edgeport.runtime.backends.registry import plan
    from edgeport.runtime.tools.tune import TuneSettings, candidates

    bundle = copied(formats_bundle, tmp_path)
    manifest = Manifest.load(bundle)
    art = manifest.artifact("litert-int8")
    assert art.parity is not None
    parity = {**art.parity, "passed": False, "status": "failed", "failures": ["top-1 0.5"]}
    manifest = manifest.with_artifact(replace(art, parity=parity))
    onnx_int8 = replace(manifest.artifact("onnx-int8"), target="onnxruntime")
    manifest.with_artifact(onnx_int8).save(bundle)

    with pytest.raises(ParityError, match=r"litert-int8: its export parity check failed"):
        load(bundle, artifact="litert-int8")
    with pytest.raises(BackendUnavailable, match=r"litert-int8.*allow_failed=True"):
        load(bundle, backend="litert", precision="int8")  # the other int8 artifacts passed
    with load(bundle, artifact="litert-int8", allow_failed=True) as model:
        assert model.artifact is not None and model.artifact.name == "litert-int8"
    chosen, left_out = candidates(bundle, Manifest.load(bundle), TuneSettings())
    pairs = {(b, a.name) for b, a in chosen}
    assert ("litert", "litert-fp32") in pairs and ("litert", "litert-int8") not in pairs
    assert any(x.startswith("litert litert-int8: its export parity check failed") for x in left_out)
    assert ("onnxruntime-cpu", "onnx-int8") in pairs and ("openvino", "onnx-int8") not in pairs
    assert "openvino onnx-int8: made for onnxruntime, not for openvino" in " ".join(left_out)
    assert ("openvino", "openvino-int8") in pairs

    source = resolve_source(bundle)
    _, skipped = plan(source.candidates, backend="openvino", precision="int8", device_kind=None)
    assert any(a.target == "onnx-int8" and "made for onnxruntime" in a.why for a in skipped)
    _, skipped = plan(source.candidates, backend="auto", precision=None, device_kind="cpu")
    (why,) = (a.why for a in skipped if (a.backend, a.target) == ("litert", "litert-int8"))
    assert why.startswith("its export parity check failed (top-1 0.5); auto never runs it")


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
