"""The exported bundle of a trained run: manifest, artifacts, reference, parity, engines."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from _env import tensorrt_module_name
from export_helpers import comparison, export_command, leftovers, snapshot

from edgeport.runtime import load
from edgeport.runtime.bundle import BatchRange, Manifest, verify_artifact
from edgeport.runtime.card import ModelCard
from edgeport.runtime.compare import TOLERANCES
from edgeport.runtime.io import sha256_file
from edgeport.runtime.reference import load_reference

pytestmark = pytest.mark.slow

ONNX_NAMES = ["onnx-fp32", "onnx-fp16", "onnx-int8"]
ENGINE_NAMES = ["tensorrt-fp32", "tensorrt-fp16", "tensorrt-int8"]


@pytest.fixture(scope="module")
def manifest(exported_bundle: Path) -> Manifest:
    return Manifest.load(exported_bundle)


def test_every_artifact_is_listed_and_verifies(exported_bundle: Path, manifest: Manifest) -> None:
    names = [a.name for a in manifest.artifacts]
    engines = ["onnx-int8-tensorrt", *ENGINE_NAMES] if tensorrt_module_name() else []
    assert names == ONNX_NAMES + engines
    for art in manifest.artifacts:
        path = verify_artifact(exported_bundle, art)
        assert art.size_bytes == path.stat().st_size > 1000
        assert [s.name for s in art.inputs] == ["input"]
        assert [s.name for s in art.outputs] == ["logits"]
        assert art.inputs[0].shape == ("batch", 1, 32, 32)
        assert art.inputs[0].dim_range(0) == (art.batch.min, art.batch.opt, art.batch.max)
        assert art.batch == BatchRange(1, 8, 32)
    assert manifest.artifact("onnx-fp32").path == "model.fp32.onnx"
    int8 = manifest.artifact("onnx-int8")
    assert int8.source == "onnx-fp32" and int8.target == "onnxruntime"
    assert int8.quantization is not None and int8.quantization["target"] == "onnxruntime"
    assert int8.quantization["decision"] in ("kept", "kept-slow")
    if tensorrt_module_name():
        assert manifest.artifact("onnx-int8-tensorrt").target == "tensorrt"
        engine = manifest.artifact("tensorrt-int8")
        assert engine.source == "onnx-int8-tensorrt" and engine.target == "tensorrt"
    on_disk = {p.name for p in exported_bundle.iterdir()}
    assert on_disk == {"manifest.json", "reference"} | {a.path for a in manifest.artifacts}


def test_onnx_artifacts_pass_their_gates_with_the_numbers_recorded(manifest: Manifest) -> None:
    for name in ONNX_NAMES:
        art = manifest.artifact(name)
        parity = art.parity
        assert parity is not None and art.parity_passed is True, parity
        assert parity["status"] == "passed" and parity["failures"] == []
        assert parity["count"] == 359 and "digits test" in parity["reference"]
        assert parity["backend"] == "onnxruntime-cpu" and parity["artifact"] == name
        (logits,) = parity["outputs"]
        assert logits["name"] == "logits" and logits["kind"] == "logits"
        assert logits["tolerance"] == TOLERANCES[(art.precision, "logits")].to_dict()
    fp32 = comparison(manifest.artifact("onnx-fp32").parity)
    assert fp32["max_abs"] <= 1e-4 and fp32["top1_agreement"] == 1.0
    assert comparison(manifest.artifact("onnx-fp16").parity)["top1_agreement"] >= 0.995
    int8 = comparison(manifest.artifact("onnx-int8").parity)
    assert int8["accuracy_drop"] <= 0.01
    assert int8["accuracy_reference"] > 0.85  # a trained model: the gate means something


@pytest.mark.tensorrt
def test_engines_are_recorded_with_flavour_version_and_profile(
    exported_bundle: Path, manifest: Manifest
) -> None:
    import importlib

    flavour = tensorrt_module_name()
    assert flavour is not None
    version = importlib.import_module(flavour).__version__
    for name in ENGINE_NAMES:
        art = manifest.artifact(name)
        assert art.format == "tensorrt" and art.engine is not None
        assert art.path == f"model.{art.precision}.{flavour}.engine"
        assert art.engine.flavour == flavour and art.engine.version == version
        assert art.engine.workspace_bytes == 1 << 30
        made_for = "-tensorrt" if art.precision == "int8" else ""  # its own int8 file
        assert art.source == f"onnx-{art.precision}{made_for}"
        if flavour == "tensorrt_rtx":
            assert art.engine.compute_capability is None  # AOT: portable across RTX GPUs
            assert art.engine.timing_cache is None
        parity = art.parity
        assert parity is not None
        if parity["status"] == "not_run":  # no GPU that can run it here
            assert art.parity_passed is None and parity["reason"]
        else:
            assert art.parity_passed is True
    assert manifest.versions[flavour] == version


def test_reference_is_stored_and_matches_pytorch(
    exported_bundle: Path, manifest: Manifest, trained_run: Path
) -> None:
    from edgeport.train.checkpoint import load_checkpoint, load_weights_into
    from edgeport.train.models import build_model_from_card

    ref = manifest.reference
    assert ref is not None and ref["dataset"] == "digits" and ref["split"] == "test"
    assert ref["count"] == 359
    assert ref["inputs"] == "reference/inputs.npz" and ref["outputs"] == "reference/outputs.npz"
    for key in ("weights", "inputs", "outputs", "labels"):
        assert sha256_file(exported_bundle / ref[key]) == ref["sha256"][ref[key]]
    stored = load_reference(exported_bundle, manifest)  # what check and bench read
    assert stored is not None and stored.labels is not None
    inputs, logits, labels = stored.inputs["input"], stored.outputs["logits"], stored.labels
    assert inputs.dtype == np.float32 and inputs.shape == (359, 1, 32, 32)
    assert labels.dtype == np.int64 and logits.shape == (359, 10)
    model = load_weights_into(
        build_model_from_card(manifest.card), exported_bundle / ref["weights"]
    )
    with torch.no_grad():
        again = model.eval()(torch.from_numpy(inputs)).numpy()
    assert np.abs(again - logits).max() < 1e-5
    checkpoint = load_checkpoint(trained_run)
    assert replace(manifest.card, inputs=(), outputs=()) == checkpoint.card
    assert [s.name for s in manifest.card.inputs] == ["input"]
    accuracy = float((logits.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(checkpoint.metrics["test_accuracy"], abs=1e-6)
    assert ref["accuracy"] == pytest.approx(accuracy)


def test_export_settings_and_versions_are_saved(manifest: Manifest, trained_run: Path) -> None:
    settings = manifest.export
    assert settings["source"]["kind"] == "run" and settings["source"]["dataset"] == "digits"
    assert settings["source"]["run_dir"] == str(trained_run.absolute())
    assert settings["precisions"] == ["fp32", "fp16", "int8"]
    assert settings["batch"] == "1:8:32" and settings["opset"] == 18
    assert settings["input_names"] == ["input"] and settings["output_names"] == ["logits"]
    assert settings["dynamic_shapes"] == {"input": {"0": "batch"}}
    assert settings["task"] == "classification" and settings["image"]["size"] == [32, 32]
    assert settings["calib"] == {"dataset": None, "size": 256, "method": "minmax"}
    assert settings["calibration"] == {"source": "digits train", "count": 256}
    assert settings["parity"] == {"count": 359, "dataset": "digits", "split": "test"}
    assert settings["failed_parity"] == []
    assert settings["timings"]["total"] > settings["timings"]["onnx-fp32"] > 0
    for tool in ("torch", "onnx", "onnxruntime", "onnxslim", "edgeport-export", "python"):
        assert manifest.versions[tool]


def test_onnx_carries_the_card_and_runs_outside_the_bundle(
    exported_bundle: Path, manifest: Manifest, tmp_path: Path
) -> None:
    lone = tmp_path / "model.int8.onnx"
    shutil.copyfile(exported_bundle / "model.int8.onnx", lone)
    inputs = np.load(exported_bundle / "reference" / "inputs.npz")["input"][:5]
    with load(lone, backend="onnxruntime-cpu") as model:
        assert model.card == manifest.card
        assert model.run(inputs).shape == (5, 10)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_runtime_reproduces_the_recorded_parity(
    exported_bundle: Path, manifest: Manifest, precision: str
) -> None:
    stored = load_reference(exported_bundle, manifest)
    assert stored is not None
    inputs, logits = stored.inputs["input"], stored.outputs["logits"]
    with load(exported_bundle, backend="onnxruntime-cpu", precision=precision) as model:
        out = np.concatenate([model.run(inputs[i : i + 32]) for i in range(0, len(inputs), 32)])
    tol = TOLERANCES[(precision, "logits")]
    again = tol.compare(logits, out, stored.labels)
    assert tol.failures(again) == []
    recorded = comparison(manifest.artifact(f"onnx-{precision}").parity)
    assert again.top1_agreement == pytest.approx(recorded["top1_agreement"])


def test_cli_exports_fp32_with_a_parity_limit(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-bundle"
    flags = ["--parity-limit", "40", "--batch", "2:4:16"]
    proc = export_command(str(trained_run), "--out", str(out), *flags)
    assert proc.returncode == 0, proc.stderr
    assert "onnx-fp32" in proc.stdout and "passed" in proc.stdout
    manifest = Manifest.load(out)
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32"]
    art = manifest.artifact("onnx-fp32")
    assert art.batch == BatchRange(2, 4, 16)
    assert art.parity["count"] == 40 and manifest.reference["count"] == 40
    assert "max_abs=" in proc.stdout and "top1=100.00%" in proc.stdout
    assert leftovers(out) == []
    card = json.loads((out / "manifest.json").read_text())["card"]
    assert ModelCard.from_dict(card) == manifest.card
    assert snapshot(out)["model.fp32.onnx"] == art.sha256
