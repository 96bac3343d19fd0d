"""edgeport-runtime: run exported image classifiers with numpy in, numpy out; no torch."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeport-runtime")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

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
from edgeport.runtime.model import Model, Prediction, load

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
