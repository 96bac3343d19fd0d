"""What every backend provides: opened once (slow), then run many times (fast).

As in Polygraphy, opening (loading a session or deserializing an engine) and running are
separate. ``Model`` validates every feed once, in front of every backend (:mod:`specs`), so
``Backend.infer`` receives C-contiguous arrays of the declared dtypes, in input order, whose
shapes the model accepts, and returns the outputs in output order.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.onnx_proto import OnnxSummary
from edgeport.runtime.specs import TensorSpec


@dataclass(frozen=True)
class SideBytes:
    """Another file a model needs (an OpenVINO IR's weights), read once with it."""

    path: Path
    data: bytes = field(repr=False)
    sha256: str


@dataclass(frozen=True)
class ModelBytes:
    """A model file as read once (:mod:`edgeport.runtime.source`): backends open these bytes,
    never the path again, so what was verified is what runs. ``path`` names the file in messages
    and locates an ONNX file's external data."""

    path: Path
    data: bytes = field(repr=False)
    summary: OnnxSummary | None = None  # an ONNX file's inputs, outputs and external data
    known_sha256: str | None = None  # set when the bytes were checked against a manifest
    side_files: tuple[SideBytes, ...] = ()  # read (and verified) with the file

    @property
    def sha256(self) -> str:
        """The bytes' sha256 (computed now unless the manifest check already did)."""
        return self.known_sha256 or hashlib.sha256(self.data).hexdigest()

    @property
    def content_sha256(self) -> str:
        """What the model is made of: the file's sha256, or with side files, the sha256 of the
        file's and theirs (file names aside)."""
        if not self.side_files:
            return self.sha256
        text = " ".join((self.sha256, *(s.sha256 for s in self.side_files)))
        return hashlib.sha256(text.encode()).hexdigest()


class Backend(ABC):
    """An opened model on one inference engine."""

    name: str  # its record's name (registry.backend_names())
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @abstractmethod
    def infer(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The outputs, in output order, for validated inputs in input order."""

    @abstractmethod
    def close(self) -> None:
        """Release sessions, engines and device memory; safe to call twice."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The settings this backend runs with (providers, threads, device, CUDA graph)."""


def concrete_shape(spec: TensorSpec, sizes: dict[str, int]) -> tuple[int, ...] | None:
    """``spec``'s shape with its symbolic dimensions filled from ``sizes``; None when a
    dimension stays unknown (unnamed, or named by no input)."""
    out = []
    for dim in spec.shape:
        if isinstance(dim, int):
            out.append(dim)
        elif isinstance(dim, str) and dim in sizes:
            out.append(sizes[dim])
        else:
            return None
    return tuple(out)


def symbol_sizes(specs: Sequence[TensorSpec], arrays: Sequence[np.ndarray]) -> dict[str, int]:
    """The size of every symbolic dimension the inputs name, from the arrays fed to them."""
    sizes: dict[str, int] = {}
    for spec, array in zip(specs, arrays, strict=True):
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str):
                sizes.setdefault(dim, array.shape[axis])
    return sizes
