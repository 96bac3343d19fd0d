"""OpenVINO IR (``.xml`` graph + ``.bin`` weights): OpenVINO's own format, for Intel CPUs, iGPUs
and NPUs. It loads without OpenVINO's ONNX frontend and is what its tools (benchmark_app, the
model server, NPU compilers) take.

``save_ir`` converts a model OpenVINO reads (an ONNX file of the bundle, or an ``openvino.Model``
another step made, such as a quantizer's) and saves it without compressing weights to fp16
(``ov.save_model`` does that by default): an fp32 artifact stays fp32, and an int8 one keeps the
quantization of the ONNX file it came from (its Q/DQ pairs become OpenVINO's FakeQuantize).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeport.export.onnx import tool_versions
from edgeport.runtime.errors import BackendUnavailable, ExportError

INSTALL = "pip install 'edgeport-runtime[openvino]'"


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(
            f"exporting OpenVINO IR needs OpenVINO ({exc}): {INSTALL}"
        ) from exc
    return openvino


def save_ir(source: Path | Any, dst: Path) -> tuple[dict[str, str], Path]:
    """Write the IR of ``source`` (a model file path or an ``openvino.Model``) to ``dst`` (.xml)
    and its weights beside it; returns the tool versions and the weights' path."""
    ov = import_openvino()
    if dst.suffix != ".xml":
        raise ExportError(f"an OpenVINO IR is written to an .xml file, not {dst.name}")
    try:
        model = ov.convert_model(str(source)) if isinstance(source, Path) else source
        ov.save_model(model, str(dst), compress_to_fp16=False)
    except RuntimeError as exc:
        raise ExportError(f"OpenVINO could not convert {source} to IR: {exc}") from exc
    return tool_versions("openvino"), dst.with_suffix(".bin")
