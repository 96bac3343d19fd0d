"""Model.run and Model.predict on tiny ONNX models whose outputs are known exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs
from PIL import Image

from edgeport.runtime import Model, Prediction, load
from edgeport.runtime.bundle import BatchRange
from edgeport.runtime.chunks import run_in_chunks
from edgeport.runtime.errors import InputError, ModelLoadError
from edgeport.runtime.preprocess import preprocess
from edgeport.runtime.specs import UNBOUNDED as UNBOUNDED_BATCH


def test_identity_model_returns_its_input_exactly(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.identity_model((2, 3, 2)), tmp_path / "identity.onnx")
    with load(path, threads=1) as model:
        rng = np.random.default_rng(0)
        for n in (1, 3, 7):
            batch = (rng.standard_normal((n, 2, 3, 2)) * 1e3).astype(np.float32)
            batch[0, 0, 0, 0] = np.float32(1e-40)  # a subnormal survives unchanged
            out = model.run(batch)
            assert out.dtype == np.float32
            assert out.shape == (n, 12)
            assert np.array_equal(out, batch.reshape(n, 12))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_gemm_model_matches_integer_arithmetic(tmp_path: Path, precision: str) -> None:
    path = rt_graphs.save(
        rt_graphs.gemm_model(precision=precision), tmp_path / f"gemm.{precision}.onnx"
    )
    with load(path, threads=1) as model:
        assert model.precision == precision  # guessed from the graph: fp16 weights, Q/DQ nodes
        batch = rt_graphs.integer_batch(5, (1, 2, 2))
        out = model.run(batch)
        assert np.array_equal(out, rt_graphs.gemm_reference(batch))
        assert out.tolist()[0] == rt_graphs.gemm_reference(batch[:1]).tolist()[0]


def test_conv_model_matches_a_hand_computed_convolution(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.conv_model(), tmp_path / "conv.onnx")
    with load(path, threads=1) as model:
        batch = rt_graphs.integer_batch(4, (1, 3, 3), seed=3)
        assert np.array_equal(model.run(batch), rt_graphs.conv_reference(batch))
        # one worked example: ones everywhere -> filter 0: 1-1+0.5, filter 1: 2+1+1-1
        ones = np.ones((1, 1, 3, 3), np.float32)
        assert model.run(ones).tolist() == [[0.5] * 4 + [3.0] * 4]


def test_bundle_attributes_and_automatic_choice(gemm_bundle_dir: Path) -> None:
    with load(gemm_bundle_dir, threads=1) as model:
        assert isinstance(model, Model)
        assert model.backend == "onnxruntime-cpu"
        assert model.precision == "fp32"  # on a CPU, fp32 is preferred (registry rule)
        assert model.artifact is not None and model.artifact.name == "onnx-fp32"
        assert model.input_shape == (1, 2, 2)
        assert model.batch_range == BatchRange(1, 4, 16)
        assert (model.input_name, model.output_name) == ("input", "logits")
        assert model.card is not None and model.card.class_names == ("class0", "class1", "class2")
        assert model.num_classes == 3
        assert "onnxruntime-cpu [onnx-fp32, fp32]: chosen" in model.explain()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_asking_for_a_precision_loads_that_artifact(gemm_bundle_dir: Path, precision: str) -> None:
    batch = rt_graphs.integer_batch(3, (1, 2, 2))
    with load(gemm_bundle_dir, precision=precision, threads=1) as model:
        assert model.precision == precision
        assert model.artifact is not None and model.artifact.name == f"onnx-{precision}"
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))


def test_a_file_inside_a_bundle_uses_its_manifest_entry(gemm_bundle_dir: Path) -> None:
    with load(gemm_bundle_dir / "model.fp16.onnx", threads=1) as model:
        assert model.artifact is not None and model.artifact.name == "onnx-fp16"
        assert model.batch_range == BatchRange(1, 4, 16)
        assert model.card is not None and model.card.architecture == "tiny_test"


def test_standalone_onnx_reads_its_card_from_metadata(tmp_path: Path) -> None:
    card = rt_graphs.make_card(num_classes=3)
    path = rt_graphs.save(rt_graphs.gemm_model(card=card), tmp_path / "m.onnx")
    with load(path, threads=1) as model:
        assert model.card == card
        assert model.artifact is None
        assert model.batch_range == BatchRange(1, 1, UNBOUNDED_BATCH)
        assert "batch 1..unbounded" in model.explain()


def test_fixed_batch_in_the_file_becomes_the_batch_range(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.gemm_model(batch=2), tmp_path / "m.onnx")
    with load(path, threads=1) as model:
        assert model.batch_range == BatchRange(2, 2, 2)
        batch = rt_graphs.integer_batch(2, (1, 2, 2))
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))


def test_model_without_card_runs(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "m.onnx")
    with load(path, threads=1) as model:
        assert model.card is None
        batch = rt_graphs.integer_batch(2, (1, 2, 2))
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))


def test_non_contiguous_batches_give_the_same_logits(gemm_bundle_dir: Path) -> None:
    batch = rt_graphs.integer_batch(6, (1, 2, 2))
    with load(gemm_bundle_dir, threads=1) as model:
        strided = batch[::2]
        assert not strided.flags.c_contiguous
        assert np.array_equal(model.run(strided), rt_graphs.gemm_reference(strided))
        transposed = np.ascontiguousarray(batch.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
        assert np.array_equal(model.run(transposed), rt_graphs.gemm_reference(batch))


def test_huge_finite_values_are_accepted(tmp_path: Path) -> None:
    """The fast NaN/Inf check overflows on values near float32's limit; they are still finite."""
    path = rt_graphs.save(rt_graphs.identity_model((1, 2, 2)), tmp_path / "identity.onnx")
    with load(path, threads=1) as model:
        batch = np.full((1, 1, 2, 2), 3e38, np.float32)
        assert np.array_equal(model.run(batch), batch.reshape(1, 4))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def test_predict_returns_names_and_probabilities(gemm_bundle_dir: Path) -> None:
    images = [np.array([[0, 255], [128, 64]], np.uint8), np.array([[255, 0], [0, 255]], np.uint8)]
    with load(gemm_bundle_dir, threads=1) as model:
        predictions = model.predict(images, top_k=2)
        assert model.card is not None
        logits = model.run(preprocess(images, model.card))
    expected = softmax(
        rt_graphs.gemm_reference(np.stack(images)[:, None].astype(np.float32) / 255.0)
    )
    assert len(predictions) == 2
    for pred, probs in zip(predictions, expected, strict=True):
        assert isinstance(pred, Prediction)
        order = np.argsort(-probs, kind="stable")[:2]
        assert pred.indices == [int(i) for i in order]
        assert pred.labels == [f"class{i}" for i in order]
        assert pred.probabilities == pytest.approx(probs[order].tolist(), abs=1e-6)
        assert pred.top1 == pred.labels[0]
        assert pred.confidence == pred.probabilities[0]
        assert pred.to_dict() == {
            "labels": pred.labels,
            "indices": pred.indices,
            "probabilities": pred.probabilities,
        }
    assert np.allclose(softmax(logits), expected, atol=1e-6)


def test_predict_top_k_is_capped_at_the_class_count(gemm_bundle_dir: Path) -> None:
    with load(gemm_bundle_dir, threads=1) as model:
        (pred,) = model.predict(np.zeros((2, 2), np.uint8), top_k=10)
    assert sorted(pred.indices) == [0, 1, 2]
    assert sum(pred.probabilities) == pytest.approx(1.0, abs=1e-9)
    assert pred.probabilities == sorted(pred.probabilities, reverse=True)


def test_predict_reads_files_of_any_mode(gemm_bundle_dir: Path, digit_images: list[Path]) -> None:
    with load(gemm_bundle_dir, threads=1) as model:
        from_files = model.predict(digit_images)
        assert model.card is not None
        arrays = []
        for path in digit_images:
            with Image.open(path) as image:
                arrays.append(np.asarray(image))
        from_arrays = model.predict(arrays)
        single = model.predict(digit_images[0])
    assert [p.indices for p in from_files] == [p.indices for p in from_arrays]
    assert [p.probabilities for p in from_files] == [p.probabilities for p in from_arrays]
    assert single == from_files[:1]


def test_predict_splits_and_pads_to_the_batch_range(tmp_path: Path) -> None:
    bundle = rt_bundles.gemm_bundle(tmp_path / "b", ("fp32",), batch=BatchRange(2, 2, 3))
    images = [np.full((2, 2), v, np.uint8) for v in (0, 40, 80, 120, 160)]
    with load(bundle, threads=1) as model:
        many = model.predict(images, top_k=3)  # 3 + 2
        one = model.predict(images[1], top_k=3)  # padded to 2
    assert len(many) == 5
    assert one[0] == many[1]
    expected = softmax(
        rt_graphs.gemm_reference(np.stack(images)[:, None].astype(np.float32) / 255.0)
    )
    for pred, probs in zip(many, expected, strict=True):
        assert pred.probabilities == pytest.approx(np.sort(probs)[::-1].tolist(), abs=1e-6)


def test_run_in_chunks_splits_above_max_and_pads_below_min() -> None:
    batch = np.arange(20, dtype=np.float32).reshape(5, 1, 2, 2)
    seen: list[np.ndarray] = []

    def double(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        part = feeds["x"]
        seen.append(part.copy())
        return {"y": part.reshape(len(part), -1) * 2, "n": np.full(len(part), len(part))}

    out = run_in_chunks(double, {"x": batch}, chunk=3, min_batch=3)
    assert np.array_equal(out["y"], batch.reshape(5, 4) * 2)  # the padding's outputs are dropped
    assert out["n"].tolist() == [3, 3, 3, 3, 3]
    assert [p.shape[0] for p in seen] == [3, 3]
    assert np.array_equal(seen[1], batch[[3, 4, 4]])  # padded with copies of the last sample
    whole = run_in_chunks(lambda f: {"sum": f["x"].sum()}, {"x": batch}, chunk=8)
    assert whole["sum"] == batch.sum()  # one call: its outputs as they are
    with pytest.raises(InputError, match="its first axis is not the batch"):
        run_in_chunks(lambda f: {"sum": f["x"].sum()}, {"x": batch}, chunk=2)


def test_close_frees_the_model_and_later_calls_fail(gemm_bundle_dir: Path) -> None:
    model = load(gemm_bundle_dir, threads=1)
    with model as entered:
        assert entered is model
        assert not model.closed
    assert model.closed
    model.close()  # idempotent
    with pytest.raises(ModelLoadError, match="is closed; load it again"):
        model.run(rt_graphs.integer_batch(1, (1, 2, 2)))
    assert "closed" in repr(model)


def test_importing_the_runtime_loads_no_backend_and_no_torch() -> None:
    code = (
        "import sys, json; import edgeport.runtime, edgeport.runtime.model, "
        "edgeport.runtime.cli.predict, edgeport.runtime.cli.inspect; "
        "print(json.dumps(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', "
        "'onnx', 'edgeport.train', 'edgeport.export') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_a_copied_bundle_still_loads(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(gemm_bundle_dir, tmp_path / "copy")
    with load(copy, threads=1) as model:
        batch = rt_graphs.integer_batch(2, (1, 2, 2))
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
