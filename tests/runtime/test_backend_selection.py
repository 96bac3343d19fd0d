"""Automatic choice of backend and precision, and the reasons recorded for what was passed over."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.backends.cuda import parse_device, probe_gpus
from edgeport.runtime.backends.registry import (
    BACKENDS,
    Attempt,
    ModelFile,
    Request,
    backend_spec,
    machine_report,
    plan,
    precision_rule,
)
from edgeport.runtime.bundle import Artifact
from edgeport.runtime.errors import BackendUnavailable, InputError, ParityError
from edgeport.runtime.specs import TensorSpec

CPU_ONLY = machine_report()["onnxruntime-cuda"] is not None


def test_machine_report_covers_every_backend() -> None:
    report = machine_report()
    assert set(report) == set(BACKENDS)
    assert report["onnxruntime-cpu"] is None  # the cpu extra is installed in the dev venv
    for name, reason in report.items():
        assert reason is None or (isinstance(reason, str) and reason), name


def test_gpu_probe_reports_a_reason_or_devices() -> None:
    probe = probe_gpus()
    if probe.reason is None:
        assert probe.devices and all(d.compute_capability.count(".") == 1 for d in probe.devices)
    else:
        assert probe.devices == ()
        with pytest.raises(BackendUnavailable, match=r"GPU|driver|CUDA"):
            probe.device(0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, (None, 0)),
        ("cpu", ("cpu", 0)),
        ("cuda", ("cuda", 0)),
        ("cuda:3", ("cuda", 3)),
        (2, ("cuda", 2)),
    ],
)
def test_parse_device(text: object, expected: tuple[str | None, int]) -> None:
    assert parse_device(text) == expected  # type: ignore[arg-type]


def candidates(
    *precisions: str,
    parity: dict[str, bool | None] | None = None,
    targets: dict[str, str] | None = None,
) -> list[ModelFile]:
    """One ONNX candidate per precision; ``targets`` maps a label suffix to the engine family
    an extra int8 artifact ``onnx-int8-SUFFIX`` was made for."""
    out = []
    specs = [(p, f"onnx-{p}", None) for p in precisions]
    specs += [("int8", f"onnx-int8-{suffix}", t) for suffix, t in (targets or {}).items()]
    for p, name, target in specs:
        ok = (parity or {}).get(p, True)
        art = Artifact(
            name=name,
            format="onnx",
            precision=p,
            path=f"model.{p}.onnx",
            sha256="0" * 64,
            size_bytes=1,
            inputs=(TensorSpec("input", "float32", (1, 1, 2, 2)),),
            outputs=(TensorSpec("logits", "float32", (1, 3)),),
            parity=None if ok is None else rt_bundles.passed(ok),
            target=target,
        )
        out.append(ModelFile("onnx", p, Path(art.path), art.name, artifact=art, bundle_dir=Path()))
    return out


def test_int8_made_for_one_engine_runs_only_there() -> None:
    cands = candidates("fp32", targets={"ort": "onnxruntime", "ov": "openvino", "trt": "tensorrt"})
    to_open, passed_over = plan(cands, backend="auto", precision="int8", device_kind="cpu")
    assert [(b, c.label) for b, c in to_open] == [
        ("onnxruntime-cpu", "onnx-int8-ort"),
        ("openvino", "onnx-int8-ov"),
    ]
    reasons = {(a.backend, a.target): a.why for a in passed_over}
    assert reasons[("onnxruntime-cpu", "onnx-int8-ov")] == (
        "made for openvino, not for onnxruntime (onnxruntime-cpu runs those)"
    )
    assert "made for tensorrt" in reasons[("openvino", "onnx-int8-trt")]


def test_artifact_target_is_validated() -> None:
    with pytest.raises(InputError, match="target must be one of"):
        candidates(targets={"x": "tflite"})


def test_cpu_prefers_fp32_then_int8_then_fp16() -> None:
    to_open, _ = plan(
        candidates("fp16", "int8", "fp32"),
        backend="onnxruntime-cpu",
        precision=None,
        device_kind=None,
    )
    assert [c.precision for _, c in to_open] == ["fp32", "int8", "fp16"]
    assert backend_spec("tensorrt").precisions == ("int8", "fp16", "fp32")
    assert "onnxruntime-cpu: fp32 > int8 > fp16" in precision_rule()


def test_failed_and_unchecked_parity_are_passed_over_with_reasons() -> None:
    cands = candidates("fp32", "fp16", "int8", parity={"fp32": False, "fp16": None, "int8": True})
    to_open, passed_over = plan(cands, backend="onnxruntime-cpu", precision=None, device_kind="cpu")
    assert [c.label for _, c in to_open] == ["onnx-int8"]
    reasons = {a.target: a.why for a in passed_over}
    assert "export parity check failed (max_abs 0.5 > 0.0001)" in reasons["onnx-fp32"]
    assert "auto never runs it" in reasons["onnx-fp32"]
    assert "precision='fp32' with allow_failed=True" in reasons["onnx-fp32"]
    assert "parity was not checked" in reasons["onnx-fp16"]


def test_unchecked_fp32_is_still_taken() -> None:
    to_open, _ = plan(
        candidates("fp32", parity={"fp32": None}), backend="auto", precision=None, device_kind="cpu"
    )
    assert [(b, c.label) for b, c in to_open] == [
        ("onnxruntime-cpu", "onnx-fp32"),
        ("openvino", "onnx-fp32"),
    ]


def test_asking_for_a_failed_precision_needs_allow_failed() -> None:
    cands = candidates("fp32", "int8", parity={"int8": False})
    asked = Request(explicit=True)
    to_open, passed_over = plan(
        cands, backend="onnxruntime-cpu", precision="int8", device_kind=None, request=asked
    )
    assert to_open == [] and "allow_failed=True" in passed_over[0].why
    opted_in = Request(explicit=True, allow_failed=True)
    to_open, _ = plan(
        cands, backend="onnxruntime-cpu", precision="int8", device_kind=None, request=opted_in
    )
    assert [c.label for _, c in to_open] == ["onnx-int8"]


def test_auto_on_cpu_only_plans_cpu() -> None:
    to_open, passed_over = plan(
        candidates("fp32"), backend="auto", precision=None, device_kind="cpu"
    )
    assert [(b, c.label) for b, c in to_open] == [
        ("onnxruntime-cpu", "onnx-fp32"),  # first by rule; openvino only if it cannot open
        ("openvino", "onnx-fp32"),
    ]
    assert passed_over == []


def test_load_records_the_reasons_in_explain(tmp_path: Path) -> None:
    bundle = rt_bundles.gemm_bundle(
        tmp_path / "b",
        ("fp32", "fp16", "int8"),
        parity={"fp32": rt_bundles.passed(False), "int8": None},
    )
    with load(bundle, threads=1) as model:
        assert model.precision == "fp16"  # fp32 failed, int8 unchecked
        text = model.explain()
        statuses = {(a.target, a.status) for a in model.attempts}
        assert ("onnx-fp32", "skipped") in statuses
        assert ("onnx-int8", "skipped") in statuses
        assert ("onnx-fp16", "chosen") in statuses
    assert "onnxruntime-cpu [onnx-fp32, fp32]: skipped: its export parity check failed" in text
    assert "onnxruntime-cpu [onnx-fp16, fp16]: chosen" in text
    assert "tensorrt: skipped: no tensorrt artifact" in text
    assert "choice: no tuning record (run `edgeport tune`" in text and precision_rule() in text
    assert "graph_optimization_level: ORT_ENABLE_ALL" in text
    assert "intra_op_threads: 1" in text
    if CPU_ONLY:
        assert "onnxruntime-cuda: skipped:" in text


def test_nothing_passed_parity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bundle = rt_bundles.gemm_bundle(
        tmp_path / "b",
        ("fp32", "int8"),
        parity={"fp32": rt_bundles.passed(False), "int8": rt_bundles.passed(False)},
    )
    with pytest.raises(BackendUnavailable, match=r"no backend can run .*\n.*parity check failed"):
        load(bundle, device="cpu")
    with pytest.raises(ParityError, match=r"onnx-int8: its export parity check failed.*allow_fail"):
        load(bundle, precision="int8")
    with (
        caplog.at_level(logging.WARNING, logger="edgeport.runtime.loader"),
        load(bundle, precision="int8", threads=1, allow_failed=True) as model,
    ):
        batch = np.ones((1, 1, 2, 2), np.float32)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
        assert "chosen: its export parity check failed" in model.explain()
    assert "running onnx-int8 although its export parity check failed" in caplog.text


def test_attempt_text() -> None:
    assert str(Attempt("tensorrt", "", None, "skipped", "no GPU")) == "tensorrt: skipped: no GPU"
    assert (
        str(Attempt("onnxruntime-cpu", "onnx-fp32", "fp32", "chosen"))
        == "onnxruntime-cpu [onnx-fp32, fp32]: chosen"
    )


@pytest.mark.skipif(not CPU_ONLY, reason="a CUDA backend can run here")
def test_auto_explains_why_gpu_backends_were_skipped(gemm_bundle_dir: Path) -> None:
    with load(gemm_bundle_dir, threads=1) as model:
        cuda = [a for a in model.attempts if a.backend == "onnxruntime-cuda"]
    assert len(cuda) == 1 and cuda[0].status == "skipped"
    assert cuda[0].why == machine_report()["onnxruntime-cuda"]
