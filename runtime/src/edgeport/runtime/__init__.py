"""edgeport-runtime: run any model (a bundle, ONNX file or TensorRT engine) with numpy in, numpy
out, on ONNX Runtime, OpenVINO or TensorRT; no torch."""

from __future__ import annotations

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    DatasetError,
    EdgeportError,
    ExportError,
    InputError,
    ModelLoadError,
    ParityError,
)
from edgeport.runtime.loader import load
from edgeport.runtime.model import Model, Prediction

__all__ = [
    "BackendUnavailable",
    "ConfigError",
    "DatasetError",
    "EdgeportError",
    "ExportError",
    "InputError",
    "Model",
    "ModelCard",
    "ModelLoadError",
    "ParityError",
    "Prediction",
    "__version__",
    "load",
]


def __getattr__(name: str) -> str:
    """``__version__``, read when asked: importing importlib.metadata at start-up would cost
    every process that loads a model tens of milliseconds."""
    if name == "__version__":
        from edgeport.runtime.envinfo import package_version

        return package_version("edgeport-runtime") or "0.0.0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
