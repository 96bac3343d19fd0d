"""A module to an ExecuTorch program (``.pte``): PyTorch's own format for phones and
microcontrollers, lowered to the XNNPACK delegate (Arm and x86 CPUs).

fp32: ``torch.export`` -> ``to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()])``
-> ``.pte``. int8: PT2E static quantization with XNNPACK's quantizer (symmetric, per-channel
weights), calibrated on the export's calibration data, then the same lowering. Inputs and
outputs stay float32 and the dynamic dimensions keep the export's ranges: ExecuTorch plans
memory for the largest shape, so every dynamic dimension needs a maximum.

torch 2.14's fake convolution narrows a dynamic batch to < 16 while XNNPACK's batch-norm
fusion re-traces the graph (a guard on the example's size it then ignores); the ranges the
program was exported with are restored before memory planning, and the export's parity gate
runs the program at the bundle's batch sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeport.export.onnx import tool_versions
from edgeport.export.pt2e import calibrated_int8
from edgeport.export.samples import Batch
from edgeport.runtime.errors import BackendUnavailable, ExportError
from edgeport.runtime.io import atomic_write_bytes

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INSTALL = "pip install 'edgeport-export[executorch]'"


def import_executorch() -> object:
    """Fail early, naming the extra, when ExecuTorch's exporter is not installed."""
    try:
        import executorch.exir
    except ImportError as exc:
        raise BackendUnavailable(
            f"exporting .pte files needs ExecuTorch ({exc}): {INSTALL}"
        ) from exc
    return executorch.exir


def export_pte(
    module: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    dynamic_shapes: Any,
    dst: Path,
    *,
    precision: str = "fp32",
    calibration: Sequence[Batch] = (),
    names: Sequence[str] = (),
    calibration_chunk: int = 32,
) -> dict[str, str]:
    """Write the ``.pte`` of ``module`` (traced on ``example``) to ``dst``; returns the tool
    versions. ``precision`` is fp32 or int8 (calibrated on ``calibration``)."""
    import_executorch()
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    if precision == "int8":
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        quantizer = XNNPACKQuantizer().set_global(
            get_symmetric_quantization_config(is_per_channel=True)
        )
        module = calibrated_int8(
            module, example, dynamic_shapes, quantizer, calibration, names, chunk=calibration_chunk
        )
    elif precision != "fp32":
        raise ExportError(f"ExecuTorch programs are exported at fp32 or int8, not {precision}")
    program = torch.export.export(module, example, dynamic_shapes=dynamic_shapes)
    declared = dict(program.range_constraints)
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    _restore_ranges(lowered.exported_program(), declared)
    buffer = lowered.to_executorch().buffer
    delegated = sum(
        "executorch_call_delegate" in str(node.target)
        for node in lowered.exported_program().graph.nodes
    )
    log.info("ExecuTorch %s program: %d XNNPACK delegate call(s)", precision, delegated)
    atomic_write_bytes(dst, buffer)
    return tool_versions("executorch", "torch")


def _restore_ranges(program: Any, declared: dict[Any, Any]) -> None:
    """Put the exported ranges back into the shape environment memory planning reads."""
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        for dim in getattr(value, "shape", ()):
            env = getattr(getattr(dim, "node", None), "shape_env", None)
            if env is not None:
                for symbol, bounds in declared.items():
                    if symbol in env.var_to_range:
                        env.var_to_range[symbol] = bounds
                return
