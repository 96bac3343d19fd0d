"""edgeport-export: ONNX and TensorRT export gated by parity checks.

``export_module(module, example_inputs, out, ...)`` turns any ``torch.nn.Module`` into a bundle;
``export(run_dir, out, ...)`` does the same for a training run and ``export_onnx(model.onnx,
out, ...)`` for an ONNX file from elsewhere. All take ``ExportSettings`` (or its fields as
keyword options). Heavy modules (torch, onnx) load on
first use, so ``edgeport --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeport.export.api import export
    from edgeport.export.module import export_module
    from edgeport.export.onnx_in import export_onnx
    from edgeport.export.quantize import CalibrationConfig
    from edgeport.export.settings import ExportSettings, ImagePreprocessing

_WHERE = {
    "export": "edgeport.export.api",
    "export_module": "edgeport.export.module",
    "export_onnx": "edgeport.export.onnx_in",
    "CalibrationConfig": "edgeport.export.quantize",
    "ExportSettings": "edgeport.export.settings",
    "ImagePreprocessing": "edgeport.export.settings",
}
__all__ = [
    "CalibrationConfig",
    "ExportSettings",
    "ImagePreprocessing",
    "export",
    "export_module",
    "export_onnx",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'edgeport.export' has no attribute {name!r}")
