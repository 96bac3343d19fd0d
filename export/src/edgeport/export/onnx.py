"""PyTorch to ONNX: the fp32 graph every other artifact starts from, and its fp16 variant.

``torch_to_onnx`` runs ``torch.onnx.export(dynamo=True)`` on any module with named inputs and
outputs and the dynamic dimensions asked for, checks the graph (``onnx.checker`` + strict shape
inference) and simplifies it with onnxslim. ``graph_specs`` reads its inputs and outputs as
TensorSpecs; ``embedding_ranges`` finds integer inputs that index an embedding table.
``set_metadata`` stores the model card in ``metadata_props``. ``convert_fp16`` turns the graph
into fp16 compute with float32 inputs/outputs; integer tensors are left alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.runtime.backends.onnx_proto import ELEM_TYPES
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.envinfo import package_versions
from edgeport.runtime.errors import ConfigError, ExportError
from edgeport.runtime.io import atomic_write_bytes
from edgeport.runtime.source import PRECISION_METADATA_KEY
from edgeport.runtime.specs import TensorSpec, shape_text

if TYPE_CHECKING:
    import onnx
    import torch

log = logging.getLogger(__name__)

INPUT_NAME = "input"  # a trained classifier's input and output
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18  # what torch.onnx's dynamo exporter, ORT and TensorRT(-RTX) parsers share
MIN_OPSET, MAX_OPSET = 17, 23
_INTS = frozenset({"int8", "uint8", "int16", "int32", "int64"})
_OP_RE = re.compile(r"OpOverload\(op='([^']+)'")


@dataclass(frozen=True)
class OnnxInfo:
    """What the exporter produced, for the manifest."""

    opset: int
    nodes: int
    simplified: bool
    tools: dict[str, str]


def check_opset(opset: int | None) -> int:
    """The opset to export with; outside [MIN_OPSET, MAX_OPSET] raises ``ConfigError``."""
    if opset is None:
        return DEFAULT_OPSET
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"ONNX opset must be an integer in [{MIN_OPSET}, {MAX_OPSET}], got {opset!r}"
        )
    return opset


def _unsupported_operator(exc: BaseException) -> str | None:
    """The aten/custom operator named in a torch.onnx error chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        match = _OP_RE.search(str(current))
        if match:
            return match.group(1)
        current = current.__cause__ or current.__context__
    return None


def _last_line(exc: BaseException) -> str:
    """The innermost error's message, without torch.onnx's generic advice."""
    current = exc
    while current.__cause__ is not None:
        current = current.__cause__
    text = str(current).strip().splitlines()
    return f"{type(current).__name__}: {text[0] if text else ''}"


def _torch_export(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    io_names: tuple[Sequence[str], Sequence[str]],
    dynamic_shapes: tuple[dict[int, Any] | None, ...],
    opset: int,
    name: str,
) -> onnx.ModelProto:
    import torch

    captured = io.StringIO()
    try:
        # torch.onnx prints its progress to stdout; keep it for the debug log instead
        with contextlib.redirect_stdout(captured), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                input_names=list(io_names[0]),
                output_names=list(io_names[1]),
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # torch.export/torch.onnx raise many unrelated types
        operator = _unsupported_operator(exc)
        if operator:
            raise ExportError(
                f"cannot export {name} to ONNX: operator {operator} has no ONNX translation "
                f"in opset {opset}. Replace it with supported operations in the model, or "
                f"try another --opset"
            ) from exc
        raise ExportError(f"cannot export {name} to ONNX: {_last_line(exc)}") from exc
    finally:
        if captured.getvalue().strip():
            log.debug("torch.onnx: %s", captured.getvalue().strip())
    if program is None:
        raise ExportError(f"torch.onnx.export returned no program for {name}")
    return program.model_proto


def check_model(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """``onnx.checker`` (full) and strict shape inference; errors become ``ExportError``."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{what} is not a valid ONNX model: {exc}") from exc


def _simplify(model: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, bool]:
    import onnxslim

    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # noqa: BLE001 - onnxslim raises whatever its passes raise
        log.warning("onnxslim could not simplify %s (%s); keeping the checked graph", name, exc)
        return model, False
    if slim is None:
        return model, False
    return slim, True


def set_metadata(model: onnx.ModelProto, card: ModelCard, precision: str) -> None:
    """Store the card (``edgeport.card``) and the precision in ``metadata_props``."""
    values = {
        ONNX_METADATA_KEY: json.dumps(card.to_dict(), sort_keys=True),
        PRECISION_METADATA_KEY: precision,
    }
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def graph_specs(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's inputs (initializers aside) and outputs as TensorSpecs without ranges."""
    graph = model.graph
    weights = {t.name for t in graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dtype = ELEM_TYPES.get(tensor.elem_type)
        if dtype is None:
            raise ExportError(
                f"graph tensor {value.name!r} has ONNX element type {tensor.elem_type}, which "
                "edgeport does not run; return float, integer or bool tensors"
            )
        dims = tuple(
            d.dim_param or (d.dim_value if d.HasField("dim_value") else None)
            for d in tensor.shape.dim
        )
        return TensorSpec(value.name, dtype, dims)

    inputs = tuple(spec(v) for v in graph.input if v.name not in weights)
    return inputs, tuple(spec(v) for v in graph.output)


def check_same_io(
    expected: tuple[Sequence[TensorSpec], Sequence[TensorSpec]], model: onnx.ModelProto, what: str
) -> None:
    """``model`` has exactly the inputs and outputs (names, dtypes, shapes) of ``expected``."""
    got = graph_specs(model)
    for kind, want, have in zip(("inputs", "outputs"), expected, got, strict=True):
        if [(s.name, s.dtype, s.shape) for s in want] != [(s.name, s.dtype, s.shape) for s in have]:
            raise ExportError(
                f"{what} changed the graph's {kind}: expected "
                + ", ".join(f"{s.name} {s.dtype} {shape_text(s.shape)}" for s in want)
                + "; got "
                + ", ".join(f"{s.name} {s.dtype} {shape_text(s.shape)}" for s in have)
            )


def embedding_ranges(model: onnx.ModelProto) -> dict[str, tuple[float, float]]:
    """Integer inputs that index a table: ``Gather(initializer [V, D], input)`` -> (0, V - 1).

    An id outside the table would read out of bounds (ONNX Runtime raises, TensorRT does not
    check), so the card declares the range and every feed is checked against it.
    """
    graph = model.graph
    tables = {t.name: list(t.dims) for t in graph.initializer if len(t.dims) == 2}
    integer = {v.name for v in graph.input if ELEM_TYPES.get(v.type.tensor_type.elem_type) in _INTS}
    found: dict[str, tuple[float, float]] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        table, index = node.input[0], node.input[1]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table in tables and index in integer and axis == 0:
            high = float(tables[table][0] - 1)
            found[index] = (0.0, min(high, found.get(index, (0.0, high))[1]))
    return found


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write a single-file ONNX model atomically (weights inline)."""
    return atomic_write_bytes(path, model.SerializeToString())


def tool_versions(*names: str) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (absent ones left out)."""
    return package_versions(names)


@dataclass(frozen=True)
class ExportedGraph:
    """The checked (and simplified) fp32 graph and what the manifest says about it."""

    model: onnx.ModelProto
    info: OnnxInfo


def torch_to_onnx(
    model: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_shapes: tuple[dict[int, Any] | None, ...],
    opset: int | None = None,
    name: str = "the model",
    simplify: bool = True,
) -> ExportedGraph:
    """Export ``model`` (eval mode, CPU) called on ``args`` to a checked fp32 ONNX graph."""
    import torch

    opset = check_opset(opset)
    model = model.eval().to("cpu")
    log.info("exporting %s to ONNX (opset %d)", name, opset)
    with torch.no_grad():
        proto = _torch_export(model, args, (input_names, output_names), dynamic_shapes, opset, name)
    proto = check_model(proto, f"the exported {name}")
    simplified = False
    if simplify:
        proto, simplified = _simplify(proto, name)
        proto = check_model(proto, f"the simplified {name}")
    inputs, outputs = graph_specs(proto)
    got = ([s.name for s in inputs], [s.name for s in outputs])
    if got != (list(input_names), list(output_names)):
        raise ExportError(
            f"the exported {name} has inputs {got[0]} and outputs {got[1]}, expected "
            f"{list(input_names)} and {list(output_names)}"
            " (an input the graph does not use is dropped: remove it from the model's inputs)"
        )
    proto.producer_name = "edgeport-export"
    tools = tool_versions("torch", "onnx", "onnxscript", "onnxslim")
    info = OnnxInfo(opset=opset, nodes=len(proto.graph.node), simplified=simplified, tools=tools)
    return ExportedGraph(proto, info)


def _float_outputs(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """Make the float32 outputs ``names`` float32 again where the converter left them float16.

    With ``keep_io_types`` the converter still casts the output of a node it keeps in fp32
    (e.g. the Resize ending a segmentation model) to fp16 when that output is a graph output.
    Such a final Cast is turned into a cast to float32; any other float16 output gets one.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    for value in graph.output:
        tensor = value.type.tensor_type
        if value.name not in names or tensor.elem_type != TensorProto.FLOAT16:
            continue
        producer = producers.get(value.name)
        if producer is not None and producer.op_type == "Cast":
            for attribute in producer.attribute:
                if attribute.name == "to":
                    attribute.i = TensorProto.FLOAT
        else:
            half_name = f"{value.name}_float16"
            for node in graph.node:
                node.output[:] = [half_name if o == value.name else o for o in node.output]
                node.input[:] = [half_name if i == value.name else i for i in node.input]
            graph.node.append(
                helper.make_node("Cast", [half_name], [value.name], to=TensorProto.FLOAT)
            )
        tensor.elem_type = TensorProto.FLOAT


def _half_casts(model: onnx.ModelProto) -> int:
    """Make a ``Cast(to=float32)`` whose output the converter typed float16 cast to float16.

    The converter leaves such casts of integer tensors (a TensorFlow export's element count,
    cast to float and divided by) as they were while recording their output, which fp16 nodes
    read, as float16; the checker then refuses the graph. Returns how many were fixed."""
    from onnx import TensorProto

    half = {
        v.name
        for v in model.graph.value_info
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16
    }
    fixed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or node.output[0] not in half:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
                fixed += 1
    return fixed


FP16_SAFE = 65504.0 / 2  # a tensor above half of fp16's largest value is kept in float32


def fp16_overflows(model: onnx.ModelProto, samples: Mapping[str, np.ndarray]) -> list[str]:
    """The nodes that make or read a tensor whose fp32 values on ``samples`` exceed
    :data:`FP16_SAFE` (a sum of squares over a long vector, say): in fp16 it would overflow.
    Every node of ``model`` must be named. Runs ONNX Runtime's CPU provider."""
    import onnx
    import onnxruntime as ort

    from edgeport.runtime.backends.onnxrt import ort_errors

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {v.name for v in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in known:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                known.add(out)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    errors: tuple[type[BaseException], ...] = (*ort_errors(), ValueError)
    try:
        session = ort.InferenceSession(
            probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        values = session.run(names, dict(samples))
    except errors as exc:
        log.info("could not look for fp16 overflows (%s); converting every node", exc)
        return []
    big = {
        name
        for name, value in zip(names, values, strict=True)
        if np.issubdtype(np.asarray(value).dtype, np.floating)
        and np.asarray(value).size
        and float(np.nanmax(np.abs(value))) > FP16_SAFE
    }
    return [
        node.name
        for node in model.graph.node
        if any(o in big for o in node.output) or any(i in big for i in node.input)
    ]


def _skip_half_round_trips(model: onnx.ModelProto, blocked: set[str]) -> int:
    """Feed the readers of ``Cast(to=float32)(Cast(to=float16)(x))`` ``x`` itself, where ``x``
    is made by a ``blocked`` (float32) node.

    The converter casts a float32 node's output to fp16 and back before the next float32 node,
    which would overflow exactly where nodes were kept in float32 for their range. The fp16
    cast stays for any fp16 reader. Returns how many round trips were skipped."""
    from onnx import TensorProto

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None)

    producers = {out: node for node in model.graph.node for out in node.output}
    skipped: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Cast" or cast_to(node) != TensorProto.FLOAT:
            continue
        half = producers.get(node.input[0])
        if half is not None and half.op_type == "Cast" and cast_to(half) == TensorProto.FLOAT16:
            source = producers.get(half.input[0])
            if source is not None and source.name in blocked:
                skipped[node.output[0]] = half.input[0]
    outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        node.input[:] = [skipped.get(i, i) if i not in outputs else i for i in node.input]
    kept = [n for n in model.graph.node if not (n.output and n.output[0] in skipped)]
    used = {i for n in kept for i in n.input} | outputs
    kept = [n for n in kept if n.op_type != "Cast" or any(o in used for o in n.output)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(skipped)


def _own_initializers(model: onnx.ModelProto, blocked: set[str]) -> int:
    """Give the ``blocked`` nodes their own copy of each initializer they share with other
    nodes: the converter keeps a blocked node's initializers in float32, which a shared one
    would then be for the fp16 nodes too. Returns how many copies were made."""
    weights = {t.name: t for t in model.graph.initializer}
    users: dict[str, set[bool]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in weights:
                users.setdefault(name, set()).add(node.name in blocked)
    shared = {name for name, kinds in users.items() if len(kinds) == 2}
    for name in shared:
        copy = type(weights[name])()
        copy.CopyFrom(weights[name])
        copy.name = f"{name}_float32"
        model.graph.initializer.append(copy)
    for node in model.graph.node:
        if node.name in blocked:
            node.input[:] = [f"{i}_float32" if i in shared else i for i in node.input]
    return len(shared)


def convert_fp16(
    src: str | Path,
    dst: str | Path,
    card: ModelCard,
    *,
    keep_io_types: bool = True,
    samples: Mapping[str, np.ndarray] | None = None,
) -> dict[str, str]:
    """fp32 ONNX to fp16 compute; float inputs/outputs stay float32 (``keep_io_types``) and
    integer tensors are not touched. With ``samples`` (inputs by name), the nodes that make or
    read a tensor too large for fp16 on them stay in float32 (:func:`fp16_overflows`). Returns
    the tool versions used.

    The graph's ``value_info`` is dropped first: the dynamo exporter records a type for every
    intermediate tensor, and for a node the converter keeps in fp32 (Resize, TopK, Range, ...)
    it inserts a Cast but leaves the stale float32 entry, which breaks the checker ("W has
    inconsistent type tensor(float16)") and ONNX Runtime. Shape inference rebuilds it after.
    """
    import onnx
    from onnxconverter_common import float16

    from edgeport.export.int8.prepare import name_nodes

    model = onnx.load(str(src))
    io_specs = graph_specs(model)
    name_nodes(model)
    blocked = fp16_overflows(model, samples) if samples else []
    if blocked:
        log.info("keeping %d nodes in float32: their values exceed fp16's range", len(blocked))
    log.info("converting %s to fp16 (keep_io_types=%s)", Path(src).name, keep_io_types)
    del model.graph.value_info[:]
    if blocked:  # the converter casts around blocked nodes by the types it is told
        _own_initializers(model, set(blocked))
        model = onnx.shape_inference.infer_shapes(model)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            half = float16.convert_float_to_float16(
                model, keep_io_types=keep_io_types, node_block_list=blocked or None
            )
    except Exception as exc:  # the converter raises plain Exceptions for unsupported graphs
        raise ExportError(f"fp16 conversion of {Path(src).name} failed: {exc}") from exc
    if caught:  # one warning per weight clamped to fp16's range: summarise, don't flood
        log.debug("fp16 conversion clamped %d weights to fp16's range", len(caught))
    _half_casts(half)
    if blocked:
        _skip_half_round_trips(half, set(blocked))
    if keep_io_types:
        _float_outputs(half, [s.name for s in io_specs[1] if s.dtype == "float32"])
    half = check_model(half, "the fp16 model")
    if keep_io_types:
        check_same_io(io_specs, half, "fp16 conversion")
    set_metadata(half, card, "fp16")
    save_model(half, Path(dst))
    return tool_versions("onnx", "onnxconverter-common")
