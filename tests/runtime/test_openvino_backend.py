"""The OpenVINO backend on real compiled models: exact on integer-valued models in every
precision, equal to ONNX Runtime on multi-input and token models, thread-safe, cached, and
refusing settings it does not take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_graphs
import threads

from edgeport.runtime import load
from edgeport.runtime.errors import ConfigError

pytest.importorskip("openvino", reason="the openvino extra is not installed")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_every_precision_is_exact_on_an_integer_model(
    gemm_bundle_dir: Path, precision: str
) -> None:
    with load(gemm_bundle_dir, backend="openvino", precision=precision, threads=1) as model:
        batch = rt_graphs.integer_batch(5)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
        assert model.backend == "openvino" and model.precision == precision
        assert model.inputs[0].describe() == "input: float32 [batch, 1, 2, 2] (batch 1..16)"


@pytest.mark.parametrize("name", ["two_input", "tokens", "detector"])
def test_multi_input_models_agree_with_onnxruntime(tmp_path: Path, name: str) -> None:
    builder = {
        "two_input": rt_graphs.two_input_model,
        "tokens": rt_graphs.token_model,
        "detector": rt_graphs.detector_model,
    }
    path = rt_graphs.save(builder[name](), tmp_path / f"{name}.onnx")
    with load(path, backend="onnxruntime-cpu", threads=1) as ort_model:
        from edgeport.runtime.feeds import synthetic_feeds

        feeds = synthetic_feeds(ort_model.inputs, value_ranges=_ids(ort_model), seed=3)
        want = ort_model.infer(feeds)
    with load(path, backend="openvino", threads=1) as ov_model:
        assert [s.name for s in ov_model.outputs] == list(want)
        assert [s.shape for s in ov_model.inputs] == [s.shape for s in ort_model.inputs]
        got = ov_model.infer(feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5)


def _ids(model: Any) -> dict[str, tuple[float, float]]:
    return {s.name: (0, rt_graphs.VOCAB - 1) for s in model.inputs if s.dtype == "int64"}


def test_a_classifier_predicts_as_onnxruntime_does(cnn_bundle_dir: Path) -> None:
    images = [
        np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8) for i in range(3)
    ]
    with load(cnn_bundle_dir, backend="onnxruntime-cpu", threads=1) as ort_model:
        want = ort_model.predict(images, top_k=3)
    with load(cnn_bundle_dir, backend="openvino", threads=1) as ov_model:
        got = ov_model.predict(images, top_k=3)
    assert [p.indices for p in got] == [p.indices for p in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_one_model_is_safe_to_share_between_threads(gemm_bundle_dir: Path) -> None:
    with load(gemm_bundle_dir, backend="openvino", threads=1) as model:

        def work(index: int) -> None:
            for step in range(20):
                batch = rt_graphs.integer_batch(1 + (index + step) % 7, seed=index * 100 + step)
                assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))

        threads.run_concurrently(work, threads=6)


def test_compiled_models_are_cached_and_settings_described(cnn_onnx: Path, tmp_path: Path) -> None:
    cache = tmp_path / "ov-cache"
    options = {"hint": "throughput", "streams": 2, "cache_dir": str(cache)}
    with load(cnn_onnx, backend="openvino", threads=2, backend_options=options) as model:
        info = model.describe()
        first = model.run(np.zeros((2, 3, 32, 32), np.float32))
    assert info["hint"] == "throughput" and info["streams"] == 2 and info["threads"] == 2
    assert info["cache_dir"] == str(cache) and any(cache.iterdir())  # the compiled blob
    with load(cnn_onnx, backend="openvino", threads=2, backend_options=options) as again:
        assert np.array_equal(again.run(np.zeros((2, 3, 32, 32), np.float32)), first)
        assert "openvino" in again.explain()


@pytest.mark.parametrize(
    ("backend", "options", "pattern"),
    [
        ("openvino", {"colour": 1}, r"unknown openvino options \['colour'\]"),
        ("openvino", {"hint": "fast"}, r"hint must be one of \('latency', 'throughput'\)"),
        ("openvino", {"streams": 0}, r"streams must be a positive integer"),
        ("onnxruntime-cpu", {"hint": "latency"}, r"backend_options are taken by openvino only"),
    ],
)
def test_settings_it_does_not_take_are_refused(
    cnn_onnx: Path, backend: str, options: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load(cnn_onnx, backend=backend, backend_options=options)
