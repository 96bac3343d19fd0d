"""bf16: the fp32 file run with bf16 arithmetic by OpenVINO, where the CPU has it.

What the CPU has is read, never mocked: the pure functions get capability lists (a CPU without
bf16 included), and the tests on real engines follow this machine's own reading, so on a CPU
without bf16 they check that bf16 is skipped with the reason, and here that it runs."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.backends.registry import BF16_CPU_FIRST, ModelFile, ort_bf16_reason, plan
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.compare import TOLERANCES, compare_logits, judge
from edgeport.runtime.cpu_features import CpuFeatures, cpu_features, describe, describe_line
from edgeport.runtime.errors import BackendUnavailable

ov = pytest.importorskip("openvino", reason="the openvino extra is not installed")

from edgeport.runtime.backends.openvino import (  # noqa: E402 - after the importorskip
    bf16_unavailable_reason,
    cpu_capabilities,
)

WITHOUT_BF16 = ("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")  # an AVX2 or AVX-512 CPU
SAPPHIRE_RAPIDS = ("BF16", "FP16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")


def here_reason() -> str | None:
    """Why bf16 cannot run on this CPU, from OpenVINO's own reading (None: it can)."""
    return bf16_unavailable_reason(cpu_capabilities())


def bf16_gemm_bundle(root: Path) -> Path:
    """The gemm bundle with a bf16 artifact: its fp32 file, made for OpenVINO, parity passed."""
    rt_bundles.gemm_bundle(root, ("fp32",))
    manifest = Manifest.load(root)
    fp32 = manifest.artifact("onnx-fp32")
    bf16 = replace(fp32, name="onnx-bf16", precision="bf16", source=fp32.name, target="openvino")
    manifest.with_artifact(bf16).save(root)
    return root


@pytest.fixture(scope="module")
def bf16_gemm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bf16_gemm_bundle(tmp_path_factory.mktemp("bf16") / "bundle")


# -- the capability, read ------------------------------------------------------------------------


def test_a_cpu_without_bf16_is_refused_with_what_it_has() -> None:
    reason = bf16_unavailable_reason(WITHOUT_BF16)
    assert reason is not None
    assert "no bf16" in reason and "FP32, INT8" in reason and "AVX512_BF16 or AMX" in reason
    assert bf16_unavailable_reason(SAPPHIRE_RAPIDS) is None
    assert "none" in str(bf16_unavailable_reason(()))


def test_this_cpu_is_read_from_its_flags_and_from_openvino() -> None:
    caps = cpu_capabilities()
    assert "FP32" in caps  # every CPU OpenVINO runs on
    features = cpu_features()
    if "BF16" in caps:  # OpenVINO uses bf16 only where the CPU has the instructions
        assert features.bf16 and features.names(("avx512_bf16", "amx_bf16", "bf16"))
    info = describe()
    assert info["openvino"] == caps and info["bf16"] == features.bf16
    line = describe_line(info)
    assert "OpenVINO CPU capabilities: " + ", ".join(caps) in line
    assert ("bf16 (" in line) == features.bf16


def test_cpu_features_keep_only_the_precision_flags() -> None:
    zen4 = CpuFeatures.from_flags(
        "x86_64", ["fpu", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"]
    )
    assert zen4.bf16 and not zen4.amx
    assert zen4.flags == {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni"}
    assert zen4.summary() == (
        "bf16 (avx512_bf16), int8 dot products (avx512_vnni), AMX: none, fp16: none"
    )
    spr = CpuFeatures.from_flags("x86_64", ["amx_tile", "amx_bf16", "amx_int8", "avx512_fp16"])
    assert spr.bf16 and spr.amx and "AMX (amx_tile, amx_bf16, amx_int8)" in spr.summary()
    graviton3 = CpuFeatures.from_flags("aarch64", ["asimd", "bf16", "i8mm", "asimddp"])
    assert graviton3.bf16 and graviton3.names(("i8mm",)) == ["i8mm"]
    assert not CpuFeatures.from_flags("x86_64", ["avx2", "fma"]).bf16


def test_onnxruntime_says_why_it_has_no_bf16() -> None:
    x86 = ort_bf16_reason("x86_64")
    assert "no bf16 kernels for x86_64" in x86 and "openvino" in x86
    arm = ort_bf16_reason("aarch64")
    assert "MatMul only" in arm and "mlas.enable_gemm_fastmath_arm64_bfloat16" in arm


# -- the tolerance row ---------------------------------------------------------------------------


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 rounded to bf16 (8 significant bits, round to nearest even) and back."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def test_bf16_has_a_row_for_every_output_kind() -> None:
    for kind in ("logits", "tensor", "exact"):
        assert TOLERANCES[("bf16", kind)].precision == "bf16"
    logits = TOLERANCES[("bf16", "logits")]
    assert logits.min_top1_agreement == 0.99 and logits.max_accuracy_drop == 0.005
    assert logits.atol == 8 * TOLERANCES[("fp16", "logits")].atol  # 8 bits against fp16's 11


def test_bf16_rounding_passes_and_changed_classes_fail() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 4, (400, 10)).astype(np.float32)
    labels = reference.argmax(1)
    tolerance = TOLERANCES[("bf16", "logits")]
    rounded = compare_logits(reference, to_bf16(reference), labels, atol=0.08, rtol=0.08)
    assert 0 < rounded.max_abs <= 2.0**-8 * np.abs(reference).max()
    assert tolerance.failures(rounded) == []
    flipped = reference.copy()
    flipped[:8] = -flipped[:8]  # 2% of the samples change class
    failures = tolerance.failures(compare_logits(reference, flipped, labels))
    assert any("top-1 agreement" in f for f in failures)
    assert any("accuracy dropped" in f for f in failures)


def test_without_labels_bf16_is_judged_by_agreement_alone() -> None:
    reference = np.random.default_rng(1).normal(0, 4, (200, 10)).astype(np.float32)
    (check,) = judge(
        {"logits": reference},
        {"logits": to_bf16(reference)},
        precision="bf16",
        kinds={"logits": "logits"},
    )
    assert check.failures == ()
    flipped = reference.copy()
    flipped[:4] = -flipped[:4]  # 2% of the samples change class
    (check,) = judge(
        {"logits": reference}, {"logits": flipped}, precision="bf16", kinds={"logits": "logits"}
    )
    assert any("top-1 agreement" in f for f in check.failures)


# -- on the real engines, as this CPU allows -----------------------------------------------------


def test_a_bf16_artifact_runs_in_bf16_here_or_says_why_not(bf16_gemm: Path) -> None:
    why = here_reason()
    batch = rt_graphs.integer_batch(6)
    if why is not None:
        with pytest.raises(BackendUnavailable) as info:
            load(bf16_gemm, backend="openvino", precision="bf16")
        assert why in str(info.value)
        return
    with load(bf16_gemm, backend="openvino", precision="bf16", threads=1) as model:
        assert model.precision == "bf16" and model.artifact is not None
        assert model.artifact.name == "onnx-bf16"
        assert model.describe()["inference_precision"] == "bf16"
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))  # small integers
    with load(bf16_gemm, backend="openvino", precision="fp32", threads=1) as model:
        assert model.describe()["inference_precision"] == "f32"  # fp32 stays fp32


def test_onnxruntime_never_runs_the_bf16_artifact(bf16_gemm: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        load(bf16_gemm, backend="onnxruntime-cpu", precision="bf16")
    assert "ONNX Runtime's CPU provider does not run fp32 files in bf16" in str(info.value)


def test_a_bare_fp32_file_runs_in_bf16_only_when_asked(bf16_gemm: Path, tmp_path: Path) -> None:
    bare = tmp_path / "gemm.onnx"
    shutil.copyfile(bf16_gemm / "model.fp32.onnx", bare)
    with load(bare) as model:  # auto: a bare file's bf16 run has no parity check behind it
        assert model.precision == "fp32"
    if here_reason() is not None:
        with pytest.raises(BackendUnavailable, match="no bf16 arithmetic"):
            load(bare, precision="bf16")
        return
    with load(bare, precision="bf16", threads=1) as model:
        assert model.backend == "openvino" and model.precision == "bf16"
        batch = rt_graphs.integer_batch(3, seed=4)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
    inside = load(bf16_gemm / "model.fp32.onnx", backend="openvino", precision="bf16")
    with inside as model:  # a bundle's file names both of its artifacts
        assert model.artifact is not None and model.artifact.name == "onnx-bf16"


def test_the_chooser_says_why_bf16_is_passed_over(bf16_gemm: Path) -> None:
    cands = [
        ModelFile("onnx", a.precision, bf16_gemm / a.path, a.name, a, bundle_dir=bf16_gemm)
        for a in Manifest.load(bf16_gemm).artifacts
    ]
    _, passed_over = plan(cands, backend="onnxruntime-cpu", precision="bf16", device_kind=None)
    (attempt,) = passed_over
    assert attempt.target == "onnx-bf16" and "bf16" in attempt.why
    to_open, passed_over = plan(cands, backend="openvino", precision="bf16", device_kind=None)
    if here_reason() is None:
        assert [(b, c.label) for b, c in to_open] == [("openvino", "onnx-bf16")]
    else:
        assert to_open == [] and passed_over[0].why == here_reason()


def test_the_fixed_rule_takes_bf16_first_where_the_cpu_has_it(
    bf16_gemm: Path, tmp_path: Path
) -> None:
    has = {a.precision for a in Manifest.load(bf16_gemm).artifacts}
    first = next((bp for bp in BF16_CPU_FIRST if bp[1] in has), None)
    bf16_here = cpu_features().bf16 and here_reason() is None
    with load(bf16_gemm, device="cpu", threads=1) as model:  # no tuning record for it
        text = model.explain()
        if bf16_here and first is not None:
            assert (model.backend, model.precision) == first
            assert f"this CPU has bf16 arithmetic: first {first[0]} {first[1]}" in text
        else:
            assert (model.backend, model.precision) == ("onnxruntime-cpu", "fp32")
    with load(bf16_gemm, backend="openvino", threads=1) as model:  # the rule for one backend
        assert model.precision == ("bf16" if bf16_here else "fp32")
    unjudged = shutil.copytree(bf16_gemm, tmp_path / "unjudged")
    rt_bundles.rewrite_manifest(
        unjudged,
        lambda m: [a.update(parity=None) for a in m["artifacts"] if a["precision"] == "bf16"],
    )
    with load(unjudged, device="cpu", threads=1) as model:  # never first without a passed check
        assert (model.backend, model.precision) == ("onnxruntime-cpu", "fp32")
