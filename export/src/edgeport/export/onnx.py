"""PyTorch to ONNX: the fp32 graph every other artifact starts from, and its fp16 variant.

``export_onnx`` runs ``torch.onnx.export(dynamo=True)`` with a dynamic batch axis, names the
input ``input`` and the output ``logits``, checks the graph (``onnx.checker`` + shape
inference), simplifies it with onnxslim and stores the model card in ``metadata_props``.
``convert_fp16`` turns that graph into fp16 compute with fp32 inputs/outputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeport.runtime.bundle import BatchRange
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.envinfo import package_versions
from edgeport.runtime.errors import ConfigError, ExportError
from edgeport.runtime.io import atomic_write_bytes
from edgeport.runtime.model import PRECISION_METADATA_KEY

if TYPE_CHECKING:
    import onnx
    import torch

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
DEFAULT_OPSET = 18  # what torch.onnx's dynamo exporter, ORT and TensorRT(-RTX) parsers share
MIN_OPSET, MAX_OPSET = 17, 23
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
    model: torch.nn.Module, example: torch.Tensor, batch: BatchRange, opset: int, name: str
) -> onnx.ModelProto:
    import torch

    batch_dim = torch.export.Dim(BATCH_DIM, min=1, max=max(batch.max, 2))
    captured = io.StringIO()
    try:
        # torch.onnx prints its progress to stdout; keep it for the debug log instead
        with contextlib.redirect_stdout(captured):
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch_dim},),
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


def check_io(model: onnx.ModelProto, card: ModelCard, what: str) -> None:
    """The graph maps float ``input`` ["batch", C, H, W] to float ``logits`` [batch, classes]."""
    import onnx

    graph = model.graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise ExportError(
            f"{what} must have one input {INPUT_NAME!r} and one output {OUTPUT_NAME!r}, got "
            f"inputs {[i.name for i in inputs]} and outputs {[o.name for o in graph.output]}"
        )
    dims = [d.dim_param or d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    expected = [BATCH_DIM, *card.input_shape]
    if dims != expected:
        raise ExportError(f"{what} input has shape {dims}, expected {expected}")
    out_dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    if len(out_dims) != 2 or out_dims[1] != card.num_classes:
        raise ExportError(
            f"{what} output has shape {out_dims}, expected [batch, {card.num_classes}]"
        )
    for value in (inputs[0], graph.output[0]):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportError(f"{what} {value.name!r} must be float32")


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    """Write a single-file ONNX model atomically (weights inline)."""
    return atomic_write_bytes(path, model.SerializeToString())


def tool_versions(*names: str) -> dict[str, str]:
    """Installed versions of the distributions ``names`` (absent ones left out)."""
    return package_versions(names)


def export_onnx(
    model: torch.nn.Module,
    card: ModelCard,
    path: str | Path,
    *,
    batch: BatchRange,
    opset: int | None = None,
    simplify: bool = True,
) -> OnnxInfo:
    """Export ``model`` (put in eval mode, on the CPU) to an fp32 ONNX file at ``path``."""
    import torch

    opset = check_opset(opset)
    name = card.architecture
    model = model.eval().to("cpu")
    example_batch = min(max(batch.opt, 2), max(batch.max, 2))
    example = torch.zeros((example_batch, *card.input_shape), dtype=torch.float32)
    log.info("exporting %s to ONNX (opset %d, batch %s)", name, opset, batch)
    with torch.no_grad():
        proto = _torch_export(model, example, batch, opset, name)
    proto = check_model(proto, f"the exported {name}")
    simplified = False
    if simplify:
        proto, simplified = _simplify(proto, name)
        proto = check_model(proto, f"the simplified {name}")
    check_io(proto, card, f"the exported {name}")
    proto.producer_name = "edgeport-export"
    set_metadata(proto, card, "fp32")
    save_model(proto, Path(path))
    tools = tool_versions("torch", "onnx", "onnxscript", "onnxslim")
    return OnnxInfo(opset=opset, nodes=len(proto.graph.node), simplified=simplified, tools=tools)


def convert_fp16(
    src: str | Path, dst: str | Path, card: ModelCard, *, keep_io_types: bool = True
) -> dict[str, Any]:
    """fp32 ONNX to fp16 compute; inputs/outputs stay float32 unless ``keep_io_types=False``.

    Returns the tool versions used.
    """
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(src))
    log.info("converting %s to fp16 (keep_io_types=%s)", Path(src).name, keep_io_types)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            half = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    except Exception as exc:  # the converter raises plain Exceptions for unsupported graphs
        raise ExportError(f"fp16 conversion of {Path(src).name} failed: {exc}") from exc
    if caught:  # one warning per weight clamped to fp16's range: summarise, don't flood
        log.debug("fp16 conversion clamped %d weights to fp16's range", len(caught))
    half = check_model(half, "the fp16 model")
    if keep_io_types:
        check_io(half, card, "the fp16 model")
    set_metadata(half, card, "fp16")
    save_model(half, Path(dst))
    return tool_versions("onnx", "onnxconverter-common")
