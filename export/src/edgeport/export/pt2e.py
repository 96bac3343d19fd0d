"""What the phone formats share: a module traced by ``torch.export`` with its inputs by name, and
PyTorch's PT2E static int8 quantization calibrated on real data (the ONNX int8's calibration
batches), each format with its own quantizer (XNNPACK's for ExecuTorch, LiteRT's for .tflite).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.export.samples import Batch
from edgeport.runtime.errors import ExportError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CALIBRATION_CHUNK = 32  # samples per calibration call


def tensors(batch: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The arrays as tensors with row-major strides on every axis. A contiguous array may have
    any stride on a size-1 axis (images cut from channels-last data do); torch.export records
    the dimension order those strides imply, and an ExecuTorch program traced so expects
    channels-last inputs (measured: XNNPACK refused a batch of 32 images). A copy has the
    canonical strides."""
    import torch

    return tuple(torch.from_numpy(np.array(batch[n], order="C", copy=True)) for n in names)


def calibrated_int8(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    dynamic_shapes: Any,
    quantizer: Any,
    calibration: Sequence[Batch],
    names: Sequence[str],
    *,
    chunk: int = CALIBRATION_CHUNK,
    fold_quantize: bool = True,
) -> torch.nn.Module:
    """``module`` traced, observed on every calibration sample (in calls of at most ``chunk``)
    and converted to PT2E's int8 form (quantize/dequantize pairs ``quantizer`` placed)."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ExportError("int8 needs calibration data; none was given")
    traced = torch.export.export(module, example, dynamic_shapes=dynamic_shapes).module()
    prepared = prepare_pt2e(traced, quantizer)
    samples = 0
    with torch.no_grad():
        for batch in calibration:
            size = len(next(iter(batch.values())))
            for start in range(0, size, chunk):
                prepared(*tensors({n: batch[n][start : start + chunk] for n in names}, names))
            samples += size
    log.info("PT2E int8 calibration on %d samples", samples)
    return convert_pt2e(prepared, fold_quantize=fold_quantize)
