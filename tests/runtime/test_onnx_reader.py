"""The runtime's own ONNX reader agrees with the onnx package and refuses damaged files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import rt_graphs
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

from edgeport.runtime.backends.onnx_proto import TensorInfo, read_onnx_summary
from edgeport.runtime.card import ONNX_METADATA_KEY
from edgeport.runtime.errors import ModelLoadError


def test_reader_matches_the_onnx_package(tmp_path: Path) -> None:
    card = rt_graphs.make_card(num_classes=3)
    path = rt_graphs.save(
        rt_graphs.gemm_model(card=card, metadata={"edgeport.precision": "fp32"}),
        tmp_path / "m.onnx",
    )
    summary = read_onnx_summary(path)
    reference = onnx.load(str(path))
    assert summary.ir_version == reference.ir_version == 9
    assert summary.opsets == {"ai.onnx": rt_graphs.OPSET}
    assert summary.metadata == {p.key: p.value for p in reference.metadata_props}
    assert summary.metadata[ONNX_METADATA_KEY] == card.to_json()
    assert summary.inputs == [TensorInfo("input", "float32", ("batch", 1, 2, 2))]
    assert summary.outputs == [TensorInfo("logits", "float32", ("batch", 3))]
    assert summary.op_types == {"Flatten", "Gemm"}
    assert summary.external_data == []


@pytest.mark.parametrize(
    ("precision", "expected"), [("fp32", "fp32"), ("fp16", "fp16"), ("int8", "int8")]
)
def test_precision_is_guessed_from_the_graph(tmp_path: Path, precision: str, expected: str) -> None:
    path = rt_graphs.save(rt_graphs.gemm_model(precision=precision), tmp_path / "m.onnx")
    assert read_onnx_summary(path).guess_precision() == expected


def test_fixed_and_negative_dims_are_read(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 1, 2, 2])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [-1, None])
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["logits"])], "g", [x], [y])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    summary = read_onnx_summary(path)
    assert summary.inputs[0].shape == (2, 1, 2, 2)
    assert summary.outputs[0].shape == (-1, None)


def test_external_data_locations_are_found_in_initializers_and_attributes(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    const = helper.make_node(
        "Constant",
        [],
        ["B"],
        value=numpy_helper.from_array(np.arange(3, dtype=np.float32), "Bv"),
    )
    nodes = [
        const,
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 2, 2])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]))
    convert_model_to_external_data(
        model, all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True
    )
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    locations = sorted(read_onnx_summary(path).external_data)
    assert locations == sorted(
        t.external_data[0].value
        for t in [*model.graph.initializer, model.graph.node[0].attribute[0].t]
    )
    assert len(locations) == 2


def test_inputs_that_are_initializers_are_not_model_inputs(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "W")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])
    wi = helper.make_tensor_value_info("W", TensorProto.FLOAT, [3, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    node = helper.make_node("Gemm", ["input", "W"], ["logits"], transB=1)
    model = helper.make_model(helper.make_graph([node], "g", [x, wi], [y], [w]))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert [i.name for i in read_onnx_summary(path).inputs] == ["input"]


def test_missing_and_empty_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="ONNX file not found"):
        read_onnx_summary(tmp_path / "nope.onnx")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"is empty \(0 bytes\)"):
        read_onnx_summary(empty)


@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.5, 0.9, 0.99])
def test_truncated_files_are_refused(tmp_path: Path, fraction: float) -> None:
    data = rt_graphs.save(rt_graphs.small_cnn(seed=1), tmp_path / "full.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelLoadError, match=r"truncated or corrupt|holds no ONNX graph") as info:
        read_onnx_summary(cut)
    assert str(cut) in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [b"garbage that is not protobuf", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), bytes([0x0F]) * 64],
)
def test_corrupt_files_are_refused(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(payload)
    with pytest.raises(ModelLoadError, match=r"truncated or corrupt|holds no ONNX graph"):
        read_onnx_summary(path)
