"""Tiny ONNX graphs with known outputs for the runtime tests: classifiers (identity, gemm, conv,
a small CNN) and models of any shape (several inputs and outputs, integer and bool tensors).

Weights and inputs are small integers (or halves), so float32 (and float16) arithmetic is exact
and outputs can be compared with ``==``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.specs import TensorSpec

OPSET = 17


def make_card(
    num_classes: int = 4, in_channels: int = 1, size: tuple[int, int] = (2, 2)
) -> ModelCard:
    return ModelCard(
        architecture="tiny_test",
        num_classes=num_classes,
        class_names=tuple(f"class{i}" for i in range(num_classes)),
        in_channels=in_channels,
        input_size=size,
        mean=(0.0,) * in_channels,
        std=(1.0,) * in_channels,
    )


def _model(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto],
    chw: tuple[int, int, int],
    classes: int,
    *,
    batch: int | str = "batch",
    card: ModelCard | None = None,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *chw])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])
    graph = helper.make_graph(nodes, "tiny", [x], [y], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    props = dict(metadata or {})
    if card is not None:
        props[ONNX_METADATA_KEY] = card.to_json()
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def identity_model(chw: tuple[int, int, int] = (1, 2, 2), **kwargs: object) -> onnx.ModelProto:
    """logits = flatten(input): every output equals an input value exactly."""
    classes = int(np.prod(chw))
    nodes = [helper.make_node("Flatten", ["input"], ["logits"], axis=1)]
    return _model(nodes, [], chw, classes, **kwargs)  # type: ignore[arg-type]


def integer_batch(n: int, chw: tuple[int, ...] = (1, 2, 2), seed: int = 0) -> np.ndarray:
    """A float32 batch of small integers in [-4, 4]: exact through every model here."""
    return np.random.default_rng(seed).integers(-4, 5, (n, *chw)).astype(np.float32)


def gemm_weights(features: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    w = (np.arange(classes * features, dtype=np.float32).reshape(classes, features) % 7) - 3
    b = np.arange(classes, dtype=np.float32) - 1
    return w, b


def gemm_model(
    chw: tuple[int, int, int] = (1, 2, 2),
    classes: int = 3,
    precision: str = "fp32",
    **kwargs: object,
) -> onnx.ModelProto:
    """logits = flatten(input) @ W.T + b with integer W, b (see ``gemm_reference``).

    ``precision`` "fp16" stores fp16 weights and casts around the Gemm; "int8" stores int8
    weights behind a DequantizeLinear (scale 1): all three give the same exact logits.
    """
    features = int(np.prod(chw))
    w, b = gemm_weights(features, classes)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1)]
    if precision == "fp32":
        inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")]
        nodes.append(helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1))
    elif precision == "fp16":
        inits = [
            numpy_helper.from_array(w.astype(np.float16), "W"),
            numpy_helper.from_array(b.astype(np.float16), "B"),
        ]
        nodes += [
            helper.make_node("Cast", ["flat"], ["flat16"], to=TensorProto.FLOAT16),
            helper.make_node("Gemm", ["flat16", "W", "B"], ["out16"], transB=1),
            helper.make_node("Cast", ["out16"], ["logits"], to=TensorProto.FLOAT),
        ]
    elif precision == "int8":
        inits = [
            numpy_helper.from_array(w.astype(np.int8), "Wq"),
            numpy_helper.from_array(np.array(1.0, np.float32), "scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
            numpy_helper.from_array(b, "B"),
        ]
        nodes += [
            helper.make_node("DequantizeLinear", ["Wq", "scale", "zero"], ["W"]),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
        ]
    else:
        raise ValueError(precision)
    return _model(nodes, inits, chw, classes, **kwargs)  # type: ignore[arg-type]


def gemm_reference(batch: np.ndarray, classes: int = 3) -> np.ndarray:
    flat = batch.reshape(batch.shape[0], -1).astype(np.float64)
    w, b = gemm_weights(flat.shape[1], classes)
    return (flat @ w.T.astype(np.float64) + b).astype(np.float32)


CONV_KERNEL = np.array(
    [[[[1, 0], [0, -1]]], [[[2, 1], [1, 0]]]], dtype=np.float32
)  # (out=2, in=1, 2, 2)


CONV_BIAS = np.array([0.5, -1.0], dtype=np.float32)


def conv_model(**kwargs: object) -> onnx.ModelProto:
    """A 2x2 convolution (2 filters, known weights) on 1x3x3 input, then ReLU, flattened: 8
    logits (see ``conv_reference``)."""
    inits = [numpy_helper.from_array(CONV_KERNEL, "K"), numpy_helper.from_array(CONV_BIAS, "KB")]
    nodes = [
        helper.make_node("Conv", ["input", "K", "KB"], ["conv"], kernel_shape=[2, 2]),
        helper.make_node("Relu", ["conv"], ["act"]),
        helper.make_node("Flatten", ["act"], ["logits"], axis=1),
    ]
    return _model(nodes, inits, (1, 3, 3), 8, **kwargs)  # type: ignore[arg-type]


def conv_reference(batch: np.ndarray) -> np.ndarray:
    n = batch.shape[0]
    out = np.zeros((n, 2, 2, 2), dtype=np.float64)
    for f in range(2):
        for i in range(2):
            for j in range(2):
                window = batch[:, 0, i : i + 2, j : j + 2].astype(np.float64)
                out[:, f, i, j] = (window * CONV_KERNEL[f, 0]).sum(axis=(1, 2)) + CONV_BIAS[f]
    return np.maximum(out, 0).reshape(n, 8).astype(np.float32)


def small_cnn(
    num_classes: int = 10,
    in_channels: int = 3,
    size: int = 32,
    *,
    seed: int = 0,
    card: ModelCard | None = None,
) -> onnx.ModelProto:
    """A simple_cnn_bn-shaped network (conv3x3/32-BN-ReLU-pool, conv3x3/64-BN-ReLU-pool, FC 128,
    ReLU, FC classes) with seeded random weights."""
    rng = np.random.default_rng(seed)

    def arr(name: str, *shape: int, scale: float = 0.1) -> onnx.TensorProto:
        return numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name
        )

    inits = [
        arr("c1w", 32, in_channels, 3, 3),
        arr("c1b", 32),
        arr("c2w", 64, 32, 3, 3),
        arr("c2b", 64),
    ]
    for i, ch in ((1, 32), (2, 64)):
        inits += [
            numpy_helper.from_array((1 + rng.random(ch) * 0.1).astype(np.float32), f"bn{i}s"),
            arr(f"bn{i}b", ch),
            arr(f"bn{i}m", ch),
            numpy_helper.from_array((1 + rng.random(ch)).astype(np.float32), f"bn{i}v"),
        ]
    flat = 64 * (size // 4) * (size // 4)
    inits += [
        arr("f1w", 128, flat, scale=0.02),
        arr("f1b", 128),
        arr("f2w", num_classes, 128),
        arr("f2b", num_classes),
    ]
    nodes = []
    prev = "input"
    for i in (1, 2):
        nodes += [
            helper.make_node(
                "Conv",
                [prev, f"c{i}w", f"c{i}b"],
                [f"c{i}"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
            ),
            helper.make_node(
                "BatchNormalization",
                [f"c{i}", f"bn{i}s", f"bn{i}b", f"bn{i}m", f"bn{i}v"],
                [f"n{i}"],
            ),
            helper.make_node("Relu", [f"n{i}"], [f"r{i}"]),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev = f"p{i}"
    nodes += [
        helper.make_node("Flatten", [prev], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "f1w", "f1b"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "f2w", "f2b"], ["logits"], transB=1),
    ]
    return _model(nodes, inits, (in_channels, size, size), num_classes, card=card)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _graph_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto],
    name: str,
) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _ints(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    """Small-integer float32 weights: exact in float16 too, so fp16 copies give equal logits."""
    return numpy_helper.from_array(rng.integers(-2, 3, shape).astype(np.float32), name)


def detector_model(seed: int = 0) -> onnx.ModelProto:
    """A detector-shaped model: ``image`` float32 [batch, 3, 4, 4] in; ``boxes`` float32
    [batch, 4, 4], ``scores`` float32 [batch, 4] (softmax max over 3 classes) and ``labels``
    int64 [batch, 4] (their argmax) out."""
    rng = np.random.default_rng(seed)
    f = helper.make_tensor_value_info
    inits = [
        _ints(rng, "Wb", 48, 16),
        _ints(rng, "Bb", 16),
        _ints(rng, "Wc", 48, 12),
        numpy_helper.from_array(np.array([-1, 4, 4], np.int64), "box_shape"),
        numpy_helper.from_array(np.array([-1, 4, 3], np.int64), "cls_shape"),
    ]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "Wb", "Bb"], ["box_flat"]),
        helper.make_node("Reshape", ["box_flat", "box_shape"], ["boxes"]),
        helper.make_node("MatMul", ["flat", "Wc"], ["cls_flat"]),
        helper.make_node("Reshape", ["cls_flat", "cls_shape"], ["cls"]),
        helper.make_node("Softmax", ["cls"], ["probs"], axis=-1),
        helper.make_node("ReduceMax", ["probs"], ["scores"], axes=[-1], keepdims=0),
        helper.make_node("ArgMax", ["cls"], ["labels"], axis=-1, keepdims=0),
    ]
    return _graph_model(
        nodes,
        [f("image", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [
            f("boxes", TensorProto.FLOAT, ["batch", 4, 4]),
            f("scores", TensorProto.FLOAT, ["batch", 4]),
            f("labels", TensorProto.INT64, ["batch", 4]),
        ],
        inits,
        "detector",
    )


VOCAB = 10


def two_input_model(seed: int = 0) -> onnx.ModelProto:
    """``image`` float32 [batch, 3, 4, 4] and ``ids`` int64 [batch, seq] (below ``VOCAB``) in;
    ``fused`` float32 [batch, 8] = image @ W + mean over seq of an embedding of ids."""
    rng = np.random.default_rng(seed)
    f = helper.make_tensor_value_info
    inits = [_ints(rng, "W", 48, 8), _ints(rng, "E", VOCAB, 8)]
    nodes = [
        helper.make_node("Flatten", ["image"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["projected"]),
        helper.make_node("Gather", ["E", "ids"], ["embedded"], axis=0),
        helper.make_node("ReduceMean", ["embedded"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Add", ["projected", "pooled"], ["fused"]),
    ]
    return _graph_model(
        nodes,
        [
            f("image", TensorProto.FLOAT, ["batch", 3, 4, 4]),
            f("ids", TensorProto.INT64, ["batch", "seq"]),
        ],
        [f("fused", TensorProto.FLOAT, ["batch", 8])],
        inits,
        "two_input",
    )


def token_model(seed: int = 0, *, count_offset: int = 0) -> onnx.ModelProto:
    """``ids`` int64 [batch, seq] (below ``VOCAB``) and ``mask`` bool [batch, seq] in;
    ``hidden`` float32 [batch, seq, 4] (masked embeddings), ``count`` int64 [batch] (unmasked
    tokens, plus ``count_offset``: a broken copy) and ``kept`` bool [batch, seq] out."""
    rng = np.random.default_rng(seed)
    f = helper.make_tensor_value_info
    inits = [
        _ints(rng, "E", VOCAB, 4),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
        numpy_helper.from_array(np.array(count_offset, np.int64), "offset"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["embedded"], axis=0),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Where", ["mask3", "embedded", "zero"], ["hidden"]),
        helper.make_node("Cast", ["mask"], ["maski"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["maski", "seq_axis"], ["counted"], keepdims=0),
        helper.make_node("Add", ["counted", "offset"], ["count"]),
        helper.make_node("Identity", ["mask"], ["kept"]),
    ]
    return _graph_model(
        nodes,
        [
            f("ids", TensorProto.INT64, ["batch", "seq"]),
            f("mask", TensorProto.BOOL, ["batch", "seq"]),
        ],
        [
            f("hidden", TensorProto.FLOAT, ["batch", "seq", 4]),
            f("count", TensorProto.INT64, ["batch"]),
            f("kept", TensorProto.BOOL, ["batch", "seq"]),
        ],
        inits,
        "tokens",
    )


def fp16_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with float16 weights and arithmetic, float32 inputs and outputs kept."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=True)


def broken_copy(model: onnx.ModelProto, initializer: str) -> onnx.ModelProto:
    """A copy of ``model`` with the first row of ``initializer`` negated and shifted."""
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    for init in broken.graph.initializer:
        if init.name == initializer:
            values = numpy_helper.to_array(init).copy()
            values[0] = -values[0] + 3
            init.CopyFrom(numpy_helper.from_array(values, init.name))
            return broken
    raise KeyError(initializer)


def specs_of(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph inputs and outputs of ``model`` as TensorSpecs."""

    def spec(vi: onnx.ValueInfoProto) -> TensorSpec:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
        dims = tuple(
            d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in vi.type.tensor_type.shape.dim
        )
        return TensorSpec(vi.name, str(dtype), dims)

    return tuple(spec(v) for v in model.graph.input), tuple(spec(v) for v in model.graph.output)
