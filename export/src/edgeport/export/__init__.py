"""edgeport-export: ONNX and TensorRT export gated by parity checks.

``edgeport.export.export(run_dir, out, ...)`` turns a training run into a bundle. Heavy modules
(torch, onnx) load on first use, so ``edgeport --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeport.export.api import export
    from edgeport.export.quantize import CalibrationConfig

__all__ = ["CalibrationConfig", "export"]


def __getattr__(name: str) -> Any:
    if name == "export":
        from edgeport.export.api import export

        return export
    if name == "CalibrationConfig":
        from edgeport.export.quantize import CalibrationConfig

        return CalibrationConfig
    raise AttributeError(f"module 'edgeport.export' has no attribute {name!r}")
