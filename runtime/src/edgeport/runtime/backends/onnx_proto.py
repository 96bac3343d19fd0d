"""Read what the runtime needs from an ONNX file without the ``onnx`` package.

The runtime installs with numpy and onnxruntime only, yet it must look inside an ONNX file
*before* onnxruntime opens it: to read the model card from ``metadata_props``, to refuse
external-data paths that leave the model's directory, and to report a truncated or corrupt file
clearly. This module walks the protobuf wire format for exactly those fields (model metadata,
graph inputs/outputs, initializer and attribute tensors, operator types) and skips everything
else without copying it. ``inspect`` memory-maps the file, so large weights are never read;
``load`` parses the bytes it read once and hands to the engine (:func:`onnx_summary_of`).

Field numbers are those of ``onnx/onnx.proto`` (IR version 10).
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgeport.runtime.errors import ModelLoadError
from edgeport.runtime.io import open_regular

_Buf = mmap.mmap | bytes  # a memory-mapped file, or a model read into memory
MAX_GRAPH_DEPTH = 64  # subgraphs (If, Loop, Scan bodies) nested deeper are refused

# Wire types.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

# ONNX TensorProto.DataType values used here.
ELEM_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    16: "bfloat16",
}
_QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
        "DynamicQuantizeLinear",
    }
)


class _Malformed(Exception):
    """Internal: the bytes are not a well-formed protobuf message."""


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, element type and shape (int, symbolic name or None)."""

    name: str
    elem_type: str
    shape: tuple[int | str | None, ...]


@dataclass
class OnnxSummary:
    """What :func:`read_onnx_summary` found in an ONNX file."""

    path: Path
    ir_version: int = 0
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    external_data: list[str] = field(default_factory=list)  # every ``location`` referenced
    op_types: set[str] = field(default_factory=set)
    initializer_types: set[str] = field(default_factory=set)
    has_graph: bool = False

    def guess_precision(self) -> str:
        """int8 if the graph quantizes, fp16 if it stores fp16 weights, else fp32."""
        if self.op_types & _QUANTIZED_OPS:
            return "int8"
        if "float16" in self.initializer_types:
            return "fp16"
        return "fp32"


def read_onnx_summary(path: str | Path) -> OnnxSummary:
    """Parse ``path``; a missing, empty, truncated or corrupt file raises ``ModelLoadError``."""
    path = Path(path)
    with os.fdopen(open_regular(path, what="ONNX file"), "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ModelLoadError(f"ONNX file {path} is empty (0 bytes); re-export the model")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _summary(buf, size, path)


def onnx_summary_of(data: bytes, path: Path) -> OnnxSummary:
    """Parse an ONNX model already read into memory (``path`` names it in messages)."""
    if not data:
        raise ModelLoadError(f"ONNX file {path} is empty (0 bytes); re-export the model")
    return _summary(data, len(data), path)


def _summary(buf: _Buf, size: int, path: Path) -> OnnxSummary:
    summary = OnnxSummary(path=path)
    try:
        _read_model(buf, 0, size, summary)
    except _Malformed as exc:
        raise ModelLoadError(
            f"ONNX file {path} is truncated or corrupt ({exc}; file size {size} bytes); "
            "re-export or copy it again"
        ) from exc
    if not summary.has_graph:
        raise ModelLoadError(
            f"{path} holds no ONNX graph: it is not an ONNX model or it is truncated; "
            "re-export or copy it again"
        )
    return summary


def _varint(buf: _Buf, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Malformed(f"a number runs past the end of its message at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed(f"an over-long number at byte {pos}")


def _fields(buf: _Buf, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, value or start, end) for each field in [start, end).

    For a varint the third item is its value; for a length-delimited field it is the payload's
    start and the fourth item its end. Fixed-width fields are skipped but yielded.
    """
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Malformed(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise _Malformed(
                    f"field {number} at byte {pos} claims {length} bytes, past the end at {end}"
                )
            yield number, wire, pos, stop
            pos = stop
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            if pos > end:
                raise _Malformed(f"a fixed-width field runs past the end at byte {end}")
            yield number, wire, 0, pos
        else:
            raise _Malformed(f"unsupported wire type {wire} for field {number} at byte {pos}")


def _text(buf: _Buf, start: int, end: int) -> str:
    try:
        return buf[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"a string at byte {start} is not UTF-8") from exc


def _entry(buf: _Buf, start: int, end: int) -> tuple[str, str]:
    """StringStringEntryProto: key = 1, value = 2."""
    key = value = ""
    for number, wire, a, b in _fields(buf, start, end):
        if wire == _LEN and number == 1:
            key = _text(buf, a, b)
        elif wire == _LEN and number == 2:
            value = _text(buf, a, b)
    return key, value


def _read_model(buf: _Buf, start: int, end: int, out: OnnxSummary) -> None:
    """ModelProto: ir_version 1, producer_name 2, graph 7, opset_import 8, metadata_props 14,
    training_info 20, functions 25."""
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == _VARINT:
            out.ir_version = a
        elif wire != _LEN:
            continue
        elif number == 2:
            out.producer = _text(buf, a, b)
        elif number == 7:
            out.has_graph = True
            _read_graph(buf, a, b, out, top_level=True)
        elif number == 8:
            domain, version = "", 0
            for n2, w2, c, d in _fields(buf, a, b):
                if n2 == 1 and w2 == _LEN:
                    domain = _text(buf, c, d)
                elif n2 == 2 and w2 == _VARINT:
                    version = c
            out.opsets[domain or "ai.onnx"] = version
        elif number == 14:
            key, value = _entry(buf, a, b)
            out.metadata[key] = value
        elif number == 20:  # TrainingInfoProto: initialization 1, algorithm 2 (graphs)
            for n2, w2, c, d in _fields(buf, a, b):
                if n2 in (1, 2) and w2 == _LEN:
                    _read_graph(buf, c, d, out, top_level=False)
        elif number == 25:  # FunctionProto: node 7
            for n2, w2, c, d in _fields(buf, a, b):
                if n2 == 7 and w2 == _LEN:
                    _read_node(buf, c, d, out)


def _read_graph(
    buf: _Buf, start: int, end: int, out: OnnxSummary, *, top_level: bool, depth: int = 0
) -> None:
    """GraphProto: node 1, initializer 5, input 11, output 12, sparse_initializer 15."""
    if depth > MAX_GRAPH_DEPTH:
        raise _Malformed(f"subgraphs nested more than {MAX_GRAPH_DEPTH} deep")
    inputs: list[TensorInfo] = []
    initializer_names: set[str] = set()
    for number, wire, a, b in _fields(buf, start, end):
        if wire != _LEN:
            continue
        if number == 1:
            _read_node(buf, a, b, out, depth)
        elif number == 5:
            initializer_names.add(_read_tensor(buf, a, b, out))
        elif number == 15:
            _read_sparse_tensor(buf, a, b, out)
        elif top_level and number == 11:
            inputs.append(_read_value_info(buf, a, b))
        elif top_level and number == 12:
            out.outputs.append(_read_value_info(buf, a, b))
    if top_level:  # IR < 4 lists initializers among the inputs: those are not fed by the user
        out.inputs = [i for i in inputs if i.name not in initializer_names]


def _read_node(buf: _Buf, start: int, end: int, out: OnnxSummary, depth: int = 0) -> None:
    """NodeProto: op_type 4, attribute 5."""
    for number, wire, a, b in _fields(buf, start, end):
        if wire != _LEN:
            continue
        if number == 4:
            out.op_types.add(_text(buf, a, b))
        elif number == 5:
            _read_attribute(buf, a, b, out, depth)


def _read_attribute(buf: _Buf, start: int, end: int, out: OnnxSummary, depth: int = 0) -> None:
    """AttributeProto: t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23."""
    for number, wire, a, b in _fields(buf, start, end):
        if wire != _LEN:
            continue
        if number in (5, 10):
            _read_tensor(buf, a, b, out)
        elif number in (6, 11):
            _read_graph(buf, a, b, out, top_level=False, depth=depth + 1)
        elif number in (22, 23):
            _read_sparse_tensor(buf, a, b, out)


def _read_sparse_tensor(buf: _Buf, start: int, end: int, out: OnnxSummary) -> None:
    """SparseTensorProto: values 1, indices 2 (both TensorProto)."""
    for number, wire, a, b in _fields(buf, start, end):
        if number in (1, 2) and wire == _LEN:
            _read_tensor(buf, a, b, out)


def _read_tensor(buf: _Buf, start: int, end: int, out: OnnxSummary) -> str:
    """TensorProto: data_type 2, name 8, external_data 13. Returns the tensor's name."""
    name = ""
    for number, wire, a, b in _fields(buf, start, end):
        if number == 2 and wire == _VARINT:
            out.initializer_types.add(ELEM_TYPES.get(a, f"type{a}"))
        elif number == 8 and wire == _LEN:
            name = _text(buf, a, b)
        elif number == 13 and wire == _LEN:
            key, value = _entry(buf, a, b)
            if key == "location":
                out.external_data.append(value)
    return name


def _read_value_info(buf: _Buf, start: int, end: int) -> TensorInfo:
    """ValueInfoProto: name 1, type 2 -> TypeProto.tensor_type 1 -> elem_type 1, shape 2."""
    name, elem = "", "unknown"
    shape: tuple[int | str | None, ...] = ()
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == _LEN:
            name = _text(buf, a, b)
        elif number == 2 and wire == _LEN:
            for n2, w2, c, d in _fields(buf, a, b):
                if n2 == 1 and w2 == _LEN:
                    elem, shape = _read_tensor_type(buf, c, d)
    return TensorInfo(name=name, elem_type=elem, shape=shape)


def _read_tensor_type(buf: _Buf, start: int, end: int) -> tuple[str, tuple[int | str | None, ...]]:
    elem = "unknown"
    dims: list[int | str | None] = []
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == _VARINT:
            elem = ELEM_TYPES.get(a, f"type{a}")
        elif number == 2 and wire == _LEN:  # TensorShapeProto: dim 1
            for n2, w2, c, d in _fields(buf, a, b):
                if n2 == 1 and w2 == _LEN:
                    dims.append(_read_dim(buf, c, d))
    return elem, tuple(dims)


def _read_dim(buf: _Buf, start: int, end: int) -> int | str | None:
    """Dimension: dim_value 1 (int64), dim_param 2."""
    for number, wire, a, b in _fields(buf, start, end):
        if number == 1 and wire == _VARINT:
            return a - (1 << 64) if a >= 1 << 63 else a
        if number == 2 and wire == _LEN:
            return _text(buf, a, b)
    return None
