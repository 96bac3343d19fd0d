"""A module to a LiteRT model (``.tflite``, formerly TensorFlow Lite): the format Android phones
and Arm microcontrollers run, converted by ``litert-torch`` (no TensorFlow).

fp32: ``litert_torch.convert``. int8: PT2E static quantization with LiteRT's quantizer
(symmetric, per-channel weights) calibrated on the export's calibration data; the result takes
and returns int8 tensors with their scale and zero point (the runtime's ``litert`` backend
shows them as float32). Inputs keep their names (the signature's) and outputs theirs.

Shapes are fixed: the converter cannot lower a reshape whose size is a symbolic batch (every
CNN's flatten), and phones run one image at a time; so the batch is ``batch_size`` (the
bundle's minimum batch) and every other dimension the example's.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeport.export.onnx import tool_versions
from edgeport.export.pt2e import calibrated_int8, tensors
from edgeport.export.samples import Batch
from edgeport.runtime.errors import BackendUnavailable, ExportError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INSTALL = "pip install 'edgeport-export[litert]'"


def import_litert_torch() -> Any:
    """The converter, or ``BackendUnavailable`` naming the extra."""
    try:
        import litert_torch
    except ImportError as exc:
        raise BackendUnavailable(
            f"exporting .tflite files needs litert-torch ({exc}): {INSTALL}"
        ) from exc
    return litert_torch


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The converter prints its progress and logs every lowering at INFO on the root logger:
    both go to the debug log (the root logger is raised to WARNING meanwhile, unless DEBUG)."""
    root = logging.getLogger()
    level, chatter = root.level, io.StringIO()
    if level > logging.DEBUG:
        root.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(chatter):
            yield
    finally:
        root.setLevel(level)
        log.debug("litert-torch: %s", chatter.getvalue().strip())


def _named(module: torch.nn.Module, inputs: Sequence[str], outputs: Sequence[str]) -> Any:
    """``module`` called with its inputs by keyword and returning its outputs by name, so the
    LiteRT signature carries the names."""
    from torch import nn

    from edgeport.export.parity import flatten_outputs

    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, **feeds: torch.Tensor) -> dict[str, torch.Tensor]:
            result = flatten_outputs(self.inner(*(feeds[n] for n in inputs)))
            return {name: tensor for name, (_, tensor) in zip(outputs, result, strict=True)}

    named = Named()
    named.training = False  # not .eval(): an exported GraphModule refuses train()/eval()
    return named


def export_tflite(
    module: torch.nn.Module,
    example: Batch,
    dst: Path,
    *,
    inputs: Sequence[str],
    outputs: Sequence[str],
    precision: str = "fp32",
    calibration: Sequence[Batch] = (),
    trace: tuple[Batch, Any] | None = None,
) -> dict[str, str]:
    """Write the ``.tflite`` of ``module`` at the fixed shapes of ``example`` (inputs by name) to
    ``dst``; returns the tool versions. int8 calibrates on ``calibration`` a module traced on
    ``trace`` (an example and its torch.export dynamic shapes, so batches can be fed)."""
    litert_torch = import_litert_torch()
    kwargs = dict(zip(inputs, tensors(example, inputs), strict=True))
    quant_config = None
    if precision == "int8":
        module, quant_config = _int8(module, inputs, calibration, trace or (example, None))
    elif precision != "fp32":
        raise ExportError(f"LiteRT models are exported at fp32 or int8, not {precision}")
    tmp = dst.with_name(dst.name + ".tmp")
    with _quiet():
        model = litert_torch.convert(
            _named(module, inputs, outputs), sample_kwargs=kwargs, quant_config=quant_config
        )
        model.export(str(tmp))
    tmp.replace(dst)
    return tool_versions("litert-torch", "ai-edge-litert", "torch")


def _int8(
    module: torch.nn.Module,
    inputs: Sequence[str],
    calibration: Sequence[Batch],
    trace: tuple[Batch, Any],
) -> tuple[torch.nn.Module, Any]:
    """The module in PT2E's int8 form (LiteRT's quantizer) and the converter's config for it."""
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    example, shapes = trace
    quantized = calibrated_int8(
        module,
        tensors(example, inputs),
        shapes,
        quantizer,
        calibration,
        inputs,
        fold_quantize=False,
    )
    return quantized, QuantConfig(pt2e_quantizer=quantizer)
