"""ONNX fp32/fp16/int8 artifacts of a real CNN, run by real ONNX Runtime sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_helpers import SvdNet, digits_card, export_classifier, session
from torch import nn

from edgeport.export.onnx import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    check_opset,
    convert_fp16,
)
from edgeport.export.quantize import CalibrationConfig, CalibrationReader, quantize_int8
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.errors import ConfigError, ExportError
from edgeport.train.data import load_eval_arrays

pytestmark = pytest.mark.slow


def test_fp32_graph_has_named_dynamic_io_and_the_card(fp32_onnx: Path) -> None:
    model = onnx.load(str(fp32_onnx))
    onnx.checker.check_model(model, full_check=True)
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert (inp.name, out.name) == (INPUT_NAME, OUTPUT_NAME)
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 16, 16]
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [DEFAULT_OPSET]
    meta = {p.key: p.value for p in model.metadata_props}
    assert ModelCard.from_dict(json.loads(meta[ONNX_METADATA_KEY])) == digits_card()
    assert meta["edgeport.precision"] == "fp32"
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}  # folded


def test_fp32_matches_pytorch_at_every_batch_size(
    fp32_onnx: Path, cnn: tuple[nn.Module, ModelCard], digits: tuple[np.ndarray, np.ndarray]
) -> None:
    model, _ = cnn
    images, _ = digits
    sess = session(fp32_onnx)
    for n in (1, 7, 32, 64):  # beyond max too: the ONNX axis itself is unbounded
        with torch.no_grad():
            ref = model(torch.from_numpy(images[:n])).numpy()
        out = sess.run(None, {INPUT_NAME: images[:n]})[0]
        assert out.shape == (n, 10) and out.dtype == np.float32
        assert np.abs(out - ref).max() < 1e-5


def test_fp16_computes_in_half_with_float_io(
    fp32_onnx: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    dst = tmp_path / "model.fp16.onnx"
    tools = convert_fp16(fp32_onnx, dst, digits_card())
    assert "onnxconverter-common" in tools
    model = onnx.load(str(dst))
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = {t.name: t.data_type for t in model.graph.initializer}
    conv_weights = [n.input[1] for n in model.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(weights[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    images, _ = digits
    fp32 = session(fp32_onnx).run(None, {INPUT_NAME: images})[0]
    fp16 = session(dst).run(None, {INPUT_NAME: images})[0]
    assert fp16.dtype == np.float32
    assert 0 < np.abs(fp16 - fp32).max() < 0.05  # fp16 rounding is visible but small
    assert (fp16.argmax(1) == fp32.argmax(1)).mean() >= 0.98
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["edgeport.precision"] == "fp16" and ONNX_METADATA_KEY in meta


def _zero_points(model: onnx.ModelProto) -> list[np.ndarray]:
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return [
        inits[node.input[2]]
        for node in model.graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear")
        and len(node.input) > 2
        and node.input[2] in inits
        and node.input[0] not in inits  # activations, not weights
    ]


def _agreement(fp32_onnx: Path, int8: Path, images: np.ndarray) -> float:
    fp32 = session(fp32_onnx).run(None, {INPUT_NAME: images})[0]
    out = session(int8).run(None, {INPUT_NAME: images})[0]
    assert out.shape == fp32.shape and np.isfinite(out).all()
    return float((out.argmax(1) == fp32.argmax(1)).mean())


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_onnxruntime_int8_has_uint8_activations_and_per_channel_int8_weights(
    fp32_onnx: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path, method: str
) -> None:
    card = digits_card()
    calib = load_eval_arrays("digits", card, split="train", limit=64).images
    dst = tmp_path / "model.int8.onnx"
    made = quantize_int8(fp32_onnx, dst, card, [{INPUT_NAME: calib}], method=method)
    assert made.settings["calibration"] == method and "onnxruntime" in made.tools
    model = onnx.load(str(dst))
    points = _zero_points(model)
    assert points and all(p.dtype == np.uint8 for p in points)  # uint8 activations
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight_dq = next(n for n in model.graph.node if n.output[0] == conv.input[1])
    assert inits[weight_dq.input[0]].dtype == np.int8
    assert inits[weight_dq.input[1]].shape == (32,)  # one scale per output channel
    assert _agreement(fp32_onnx, dst, digits[0]) >= 0.95


def test_tensorrt_int8_is_symmetric_on_weighted_inputs_with_float_biases(
    fp32_onnx: Path, digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    card = digits_card()
    calib = load_eval_arrays("digits", card, split="train", limit=64).images
    dst = tmp_path / "model.int8.tensorrt.onnx"
    made = quantize_int8(fp32_onnx, dst, card, [{INPUT_NAME: calib}], target="tensorrt")
    assert made.settings["biases"].startswith("float")
    model = onnx.load(str(dst))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    points = _zero_points(model)
    assert points and all(p.dtype == np.int8 and not p.any() for p in points)  # symmetric
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].dtype == np.int8  # no int32 biases: TensorRT rejects them
    producers = {out: node for node in model.graph.node for out in node.output}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        assert producers[conv.input[0]].op_type == "DequantizeLinear"  # quantized input
        readers = [n for n in model.graph.node if conv.output[0] in n.input]
        assert all(r.op_type != "QuantizeLinear" for r in readers)  # output not quantized
        assert len(conv.input) == 3 and inits[conv.input[2]].dtype == np.float32
    assert _agreement(fp32_onnx, dst, digits[0]) >= 0.95


def test_int8_refuses_an_unknown_target(fp32_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int8 target must be one of"):
        quantize_int8(fp32_onnx, tmp_path / "x.onnx", digits_card(), [], target="coreml")


def test_calibration_reader_rebatches_named_inputs_and_rewinds() -> None:
    images = load_eval_arrays("digits", digits_card(), split="train", limit=70).images
    ids = np.arange(70 * 3).reshape(70, 3)
    batches = [{"input": images[:60], "ids": ids[:60]}, {"input": images[60:], "ids": ids[60:]}]
    reader = CalibrationReader(batches, batch_size=32)
    assert reader.samples == 70
    sizes = []
    while (batch := reader.get_next()) is not None:
        assert sorted(batch) == ["ids", "input"] and len(batch["ids"]) == len(batch["input"])
        sizes.append(len(batch["input"]))
    assert sizes == [32, 28, 10]
    reader.rewind()
    first = reader.get_next()
    assert first is not None and np.array_equal(first["ids"], ids[:32])
    with pytest.raises(ExportError, match="at least one sample"):
        CalibrationReader([{"input": np.zeros((0, 1, 4, 4), np.float32)}])


def test_calibration_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"one of \('minmax', 'entropy', 'percentile'\)"):
        CalibrationConfig(method="kl")
    with pytest.raises(ConfigError, match="positive integer, got 0"):
        CalibrationConfig(size=0)


def test_unsupported_operator_is_named() -> None:
    with pytest.raises(ExportError, match=r"operator aten\._linalg_svd has no ONNX translation"):
        export_classifier(SvdNet(), digits_card(), max_batch=4)


def test_opset_must_be_in_range() -> None:
    assert check_opset(None) == DEFAULT_OPSET and check_opset(17) == 17
    with pytest.raises(ConfigError, match=r"opset must be an integer in \[17, 23\], got 9"):
        check_opset(9)
