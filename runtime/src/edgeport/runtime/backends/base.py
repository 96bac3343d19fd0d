"""What every backend provides: opened once (slow), then run many times (fast).

As in Polygraphy, opening (loading a session or deserializing an engine) and running are
separate. ``Model`` validates the input once, in front of every backend, so ``Backend.run``
receives a C-contiguous float32 NCHW batch whose shape the model accepts, and returns float32
logits of shape (N, classes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

# Batch ranges read from a file whose batch axis is dynamic and unbounded.
UNBOUNDED_BATCH = 2**31 - 1


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an opened model, as the backend sees it."""

    name: str
    dtype: str  # numpy dtype name: "float32", "float16"
    shape: tuple[int | str | None, ...]  # batch axis included; str/None when dynamic

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


class Backend(ABC):
    """An opened model on one inference engine."""

    name: str  # "onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt"
    input: TensorSpec
    output: TensorSpec
    batch_limits: tuple[int, int, int] | None  # (min, opt, max) the file itself imposes

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32, (N, classes)) for a validated float32 NCHW batch."""

    @abstractmethod
    def close(self) -> None:
        """Release sessions, engines and device memory; safe to call twice."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The settings this backend runs with (providers, threads, device, CUDA graph)."""
