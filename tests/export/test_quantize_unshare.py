"""Unsharing Q/DQ pairs: same values, and every int8 convolution runs in int8 in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeport.export.quantize import unshare_qdq_pairs


def residual_block() -> onnx.ModelProto:
    """x -> Q/DQ (shared by a conv and the residual add) -> conv -> Q/DQ -> add -> y."""
    rng = np.random.default_rng(0)
    weights = rng.integers(-63, 64, size=(4, 4, 3, 3), dtype=np.int8)
    inits = [
        numpy_helper.from_array(np.float32(0.02), "x_scale"),
        numpy_helper.from_array(np.int8(0), "x_zp"),
        numpy_helper.from_array(np.float32(0.05), "c_scale"),
        numpy_helper.from_array(np.int8(0), "c_zp"),
        numpy_helper.from_array(weights, "w_q"),
        numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="qx"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"], name="dqx"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=0),
        helper.make_node("Conv", ["x_dq", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "c_scale", "c_zp"], ["c_q"]),
        helper.make_node("DequantizeLinear", ["c_q", "c_scale", "c_zp"], ["c_dq"]),
        helper.make_node("Add", ["c_dq", "x_dq"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model: onnx.ModelProto, x: np.ndarray, level: ort.GraphOptimizationLevel) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    sess = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_each_consumer_gets_its_own_pair_and_values_stay(tmp_path: Path) -> None:
    model = residual_block()
    x = np.random.default_rng(1).uniform(-2, 2, (1, 4, 8, 8)).astype(np.float32)
    before = run(model, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)

    assert unshare_qdq_pairs(model) == 1
    onnx.checker.check_model(model, full_check=True)
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    dq_outputs = [n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert all(consumers[name] == 1 for name in dq_outputs)
    param_users = [n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(param_users) == len(set(param_users)) == 3  # no shared scale: CSE cannot merge

    after = run(model, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.testing.assert_array_equal(after, before)

    optimized = tmp_path / "optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert "Conv" not in ops and ops.count("QLinearConv") == 1, ops
