"""``edgeport check`` on a real exported bundle, and on one with a damaged int8 artifact."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from edgeport.runtime.bundle import Manifest
from edgeport.runtime.cli import main
from edgeport.runtime.cli.check import attach_per_layer
from edgeport.runtime.errors import ConfigError, ModelLoadError
from edgeport.runtime.io import sha256_file
from edgeport.runtime.reference import load_reference
from edgeport.runtime.tools.check import CHECK_JSON_FIELDS, CHECK_VERDICT_FIELDS, check
from edgeport.runtime.tools.per_layer import compare_layers

CPU = ("onnxruntime-cpu",)


def damage_int8_scales(bundle: Path) -> str:
    """Negate the weight scales of the int8 model's last quantized Conv (in place, in a copy of
    a bundle) and record the new sha256/size in the manifest. Returns the Conv's output name.
    (The last: the ONNX Runtime file folds each Relu into the Q after its convolution, so a
    negated convolution's output is clamped to zero, and the layer after it adds error too.)"""
    import onnx
    from onnx import numpy_helper

    manifest = Manifest.load(bundle)
    art = manifest.artifact("onnx-int8")
    path = bundle / art.path
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    for conv in reversed(model.graph.node):
        node = producers.get(conv.input[1]) if conv.op_type == "Conv" else None
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        convs = [conv]
        scale = inits[node.input[1]]
        wrong = -numpy_helper.to_array(scale)
        scale.CopyFrom(numpy_helper.from_array(wrong, scale.name))
        onnx.save(model, str(path))
        damaged = replace(art, sha256=sha256_file(path), size_bytes=path.stat().st_size)
        manifest.with_artifact(damaged).save(bundle)
        return convs[0].output[0]
    raise AssertionError("the int8 model has no Conv with quantized weights")


@pytest.fixture(scope="module")
def damaged_bundle(exported_bundle: Path, tmp_path_factory: pytest.TempPathFactory):
    copy = tmp_path_factory.mktemp("damaged") / "bundle"
    shutil.copytree(exported_bundle, copy)
    return copy, damage_int8_scales(copy)


def test_check_passes_on_the_exported_bundle(exported_bundle: Path) -> None:
    report = check(exported_bundle, backends=CPU)
    assert report.passed, report.verdict
    reference = report.to_dict()["reference"]
    assert reference["kind"] == "torch"
    assert reference["count"] == Manifest.load(exported_bundle).reference["count"]
    assert 0.8 < reference["accuracy"] <= 1.0
    by_name = {c.artifact: c for c in report.checked}
    assert set(by_name) == {"onnx-fp32", "onnx-fp16", "onnx-int8"}
    (fp32,) = by_name["onnx-fp32"].outputs
    assert fp32.name == "logits" and fp32.kind == "logits"
    assert fp32.comparison.max_abs <= 1e-4 and fp32.comparison.top1_agreement == 1.0
    assert fp32.comparison.accuracy_candidate == pytest.approx(reference["accuracy"])
    assert by_name["onnx-fp16"].outputs[0].comparison.top1_agreement >= 0.995
    assert by_name["onnx-int8"].outputs[0].comparison.accuracy_drop <= 0.01
    for c in report.checked:
        assert c.status == "passed" and c.failures == []
        (out,) = c.outputs
        assert 0.99 < out.comparison.cosine_min <= 1.0 + 1e-9
        assert c.count == out.comparison.count == reference["count"]
        assert len(out.worst) == 5
        assert {"index", "reference_class", "candidate_class", "label"} <= set(out.worst[0])


def test_check_lists_what_cannot_run_here(exported_bundle: Path) -> None:
    from edgeport.runtime.backends.cuda import probe_gpus

    if probe_gpus().reason is None:
        pytest.skip("this machine has a GPU: nothing to skip")
    report = check(exported_bundle, artifacts=["onnx-fp32"])
    skipped = {(c.artifact, c.backend): c.reason for c in report.skipped}
    why = skipped[("onnx-fp32", "onnxruntime-cuda")]
    assert "CUDA" in why or "GPU" in why, why
    engines = [a.name for a in Manifest.load(exported_bundle).artifacts if a.format == "tensorrt"]
    if engines:
        report = check(exported_bundle, artifacts=engines)
        assert [c.status for c in report.checks] == ["skipped"] * len(engines)
        assert "GPU" in report.checks[0].reason


def test_cli_check_exits_0_and_writes_reports(
    exported_bundle: Path, tmp_path: Path, capsys
) -> None:
    code = main(
        [
            "check",
            str(exported_bundle),
            "--backend",
            "onnxruntime-cpu",
            "--json",
            str(tmp_path / "check.json"),
            "--markdown",
            str(tmp_path / "check.md"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| onnx-int8 | onnxruntime-cpu | passed | `logits` | logits |" in out
    data = json.loads((tmp_path / "check.json").read_text())
    assert data["schema"] == "edgeport.check" and data["schema_version"] == 3
    assert set(data) == {name for name, _, _ in CHECK_JSON_FIELDS}
    assert data["passed"] is True
    checked = {c["artifact"] for c in data["checks"] if c["status"] != "skipped"}
    assert checked == {"onnx-fp32", "onnx-fp16", "onnx-int8"}
    for c in data["checks"]:
        assert set(c) == {name for name, _, _ in CHECK_VERDICT_FIELDS}
    assert data["model"]["kind"] == "bundle"
    assert data["model"]["files"]["onnx-int8"] == sha256_file(
        exported_bundle / Manifest.load(exported_bundle).artifact("onnx-int8").path
    )
    assert data["settings"]["backends"] == ["onnxruntime-cpu"]
    assert "Verdict: **passed" in (tmp_path / "check.md").read_text()


def test_damaged_int8_fails_and_names_the_artifact(damaged_bundle, capsys) -> None:
    bundle, _ = damaged_bundle
    code = main(["check", str(bundle), "--backend", "onnxruntime-cpu"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    (line,) = [line for line in errors if "onnx-int8" in line and "accuracy dropped" in line]
    assert line.startswith("error: onnx-int8 on onnxruntime-cpu fails its int8 tolerance")
    assert not [line for line in errors if "onnx-fp32" in line or "onnx-fp16" in line]
    assert "Worst disagreeing samples:" in captured.out
    assert "| onnx-int8 | onnxruntime-cpu | FAILED ✗ | `logits` | logits |" in captured.out
    report = check(bundle, backends=CPU, artifacts=["onnx-int8"])
    (int8,) = report.checks
    assert int8.status == "failed"
    assert int8.outputs[0].comparison.accuracy_drop > 0.2
    assert any(not w["agree"] for w in int8.outputs[0].worst)


def test_damaged_int8_fails_against_the_stored_reference_too(damaged_bundle) -> None:
    bundle, _ = damaged_bundle
    report = check(bundle, backends=CPU, reference="stored")
    assert report.reference is not None and report.reference.kind == "stored"
    assert [c.artifact for c in report.failed] == ["onnx-int8"]


def test_per_layer_points_at_the_damaged_layer(damaged_bundle) -> None:
    bundle, conv_output = damaged_bundle
    report = check(bundle, backends=CPU, artifacts=["onnx-int8"])
    attach_per_layer(report, samples=32)
    layers = report.to_dict()["per_layer"]["onnx-int8"]
    assert layers["samples"] == 32
    assert layers["first_mismatch"] == layers["largest_jump"] == conv_output
    first = next(x for x in layers["layers"] if x["name"] == conv_output)
    assert first["rel_l2"] > 1.0  # negated weights: the output flips sign
    assert "mismatch starts at" in layers["summary"]
    assert layers["optimization_culprit"] is None  # the graph itself is wrong, not ORT's kernels


def test_per_layer_on_healthy_fp16_finds_no_mismatch(exported_bundle: Path) -> None:
    manifest = Manifest.load(exported_bundle)
    stored = load_reference(exported_bundle, manifest)
    assert stored is not None
    images = stored.inputs["input"][:16]
    report = compare_layers(
        exported_bundle / manifest.artifact("onnx-fp32").path,
        exported_bundle / manifest.artifact("onnx-fp16").path,
        [{"input": images[:8]}, {"input": images[8:]}],
        precision="fp16",
    )
    assert report.samples == 16
    assert report.first_mismatch is None
    assert len(report.layers) >= 5 and report.unmatched == 0
    assert all(layer.cosine > 0.999 for layer in report.layers)
    assert report.layers[-1].name == "logits"
    assert set(report.optimization_levels) >= {"ORT_DISABLE_ALL", "ORT_ENABLE_ALL"}


def test_check_on_dataset_digits_with_limit(exported_bundle: Path) -> None:
    report = check(exported_bundle, data="digits", limit=40, backends=CPU, artifacts=["onnx-fp32"])
    reference = report.to_dict()["reference"]
    assert reference["dataset"] == "digits" and reference["count"] == 40
    assert report.checks[0].count == report.checks[0].outputs[0].comparison.count == 40
    assert report.passed


def test_check_without_torch_falls_back_to_the_stored_reference(exported_bundle: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from edgeport.runtime.tools.check import check\n"
        f"r = check({str(exported_bundle)!r}, data='digits', backends=('onnxruntime-cpu',),"
        " artifacts=['onnx-fp32'])\n"
        "print('KIND', r.reference.kind, r.passed)\n"
        "print('WARN', r.warnings)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "KIND stored True" in out.stdout
    assert "--data digits ignored" in out.stdout


def test_a_modified_reference_file_is_refused(exported_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported_bundle, bundle)
    reference = Manifest.load(bundle).reference
    for key in ("outputs", "weights"):
        with (bundle / reference[key]).open("ab") as handle:
            handle.write(b"\0")
    modified = r" has sha256 [0-9a-f]{64}, the manifest says [0-9a-f]{64}: it was modified"
    with pytest.raises(ModelLoadError, match=r"outputs\.npz" + modified):
        check(bundle, backends=CPU, reference="stored")
    with pytest.raises(ModelLoadError, match=r"weights\.safetensors" + modified):  # the baseline
        check(bundle, backends=CPU, data="digits", limit=8, artifacts=["onnx-fp32"])


def test_check_input_errors(exported_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--limit must be >= 1"):
        check(exported_bundle, limit=0)
    with pytest.raises(ConfigError, match=r"unknown backends \['cuda'\]"):
        check(exported_bundle, backends=["cuda"])
    with pytest.raises(ConfigError, match="no artifact named 'onnx-int4'"):
        check(exported_bundle, artifacts=["onnx-int4"])
    with pytest.raises(ModelLoadError, match="not a bundle"):
        check(tmp_path)
    with pytest.raises(ConfigError, match=r"--inputs, --shapes: for bare \.onnx/\.engine files"):
        check(exported_bundle, inputs=tmp_path / "x.npz", shapes={"input": (1, 1, 8, 8)})
    with pytest.raises(ConfigError, match="--reference onnxruntime-cpu: for bare"):
        check(exported_bundle, reference="onnxruntime-cpu")
    with pytest.raises(ConfigError, match=r"unknown check settings \['per_layer'\]"):
        check(exported_bundle, per_layer=True)
