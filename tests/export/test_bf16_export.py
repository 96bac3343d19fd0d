"""The bf16 artifact of an export: the fp32 file itself, made for OpenVINO, judged against
PyTorch on the held-out digits where this CPU has bf16 (read from OpenVINO, never mocked), and
listed with the reason where it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.runtime.bundle import Manifest, verify_artifact
from edgeport.runtime.compare import TOLERANCES
from edgeport.runtime.tools.check import check

pytest.importorskip("openvino", reason="the openvino extra is not installed")

from edgeport.runtime.backends.openvino import (
    bf16_unavailable_reason,
    cpu_capabilities,
)


def test_the_bf16_artifact_is_the_fp32_file_made_for_openvino(bf16_bundle: Path) -> None:
    manifest = Manifest.load(bf16_bundle)
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32", "onnx-bf16"]
    fp32, bf16 = manifest.artifacts
    assert bf16.precision == "bf16" and bf16.target == "openvino" and bf16.source == "onnx-fp32"
    assert (bf16.path, bf16.sha256, bf16.size_bytes) == (fp32.path, fp32.sha256, fp32.size_bytes)
    assert verify_artifact(bf16_bundle, bf16) == verify_artifact(bf16_bundle, fp32)
    assert {p.name for p in bf16_bundle.iterdir()} == {"manifest.json", "reference", fp32.path}
    assert manifest.export["precisions"] == ["fp32", "bf16"]


def test_bf16_parity_against_pytorch_is_in_the_manifest(bf16_bundle: Path) -> None:
    bf16 = Manifest.load(bf16_bundle).artifact("onnx-bf16")
    parity = bf16.parity
    assert parity is not None and parity["backend"] == "openvino"
    why = bf16_unavailable_reason(cpu_capabilities())
    if why is not None:  # a CPU without bf16: listed, not judged, and never picked by auto
        assert parity["status"] == "not_run" and parity["reason"] == why
        assert bf16.parity_passed is None
        return
    assert parity["status"] == "passed" and bf16.parity_passed is True, parity
    assert parity["count"] == 359 and "digits test" in parity["reference"]
    assert "openvino" in bf16.tools
    (logits,) = parity["outputs"]
    assert logits["tolerance"] == TOLERANCES[("bf16", "logits")].to_dict()
    c = logits["comparison"]
    assert c["top1_agreement"] >= 0.99 and c["accuracy_drop"] <= 0.005
    assert c["accuracy_reference"] > 0.85  # a trained model: agreement means something
    assert 0 < c["max_abs"] < 0.2  # bf16 rounding, not fp32's 1e-6


def test_check_judges_bf16_on_openvino_and_skips_onnxruntime_with_why(bf16_bundle: Path) -> None:
    report = check(bf16_bundle, backends=("onnxruntime-cpu", "openvino"))
    verdicts = {(v.artifact, v.backend): v for v in report.checks}
    on_ort = verdicts[("onnx-bf16", "onnxruntime-cpu")]
    assert on_ort.status == "skipped" and "does not run fp32 files in bf16" in str(on_ort.reason)
    on_ov = verdicts[("onnx-bf16", "openvino")]
    why = bf16_unavailable_reason(cpu_capabilities())
    if why is None:
        assert on_ov.status == "passed" and on_ov.precision == "bf16", on_ov.message()
        assert on_ov.outputs[0].comparison.top1_agreement >= 0.99
    else:
        assert on_ov.status == "skipped" and on_ov.reason == why
    assert report.passed, report.verdict
