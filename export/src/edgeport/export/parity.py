"""The parity gate: every exported artifact against the PyTorch model on real held-out images.

The reference is the PyTorch model in eval mode (fp32, CPU) on the test split; each artifact
runs through ``edgeport.runtime`` exactly as a device would load it, and
``edgeport.runtime.compare`` judges it with ``TOLERANCES[precision]``. Engines are checked the
same way where a GPU can run them; elsewhere their parity is recorded as not run, with why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.runtime.bundle import BatchRange
from edgeport.runtime.compare import Comparison, Tolerance, compare_logits, tolerance_for
from edgeport.runtime.errors import ExportError
from edgeport.runtime.model import run_in_chunks

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceSet:
    """Held-out real images, their labels and the PyTorch fp32 eval-mode logits on them."""

    inputs: np.ndarray  # float32 NCHW
    labels: np.ndarray  # int64
    logits: np.ndarray  # float32 (N, classes)
    dataset: str
    split: str

    @property
    def count(self) -> int:
        return len(self.inputs)

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(axis=1) == self.labels).mean())


@dataclass
class ParityResult:
    """The gate's verdict on one artifact."""

    artifact: str
    precision: str
    tolerance: Tolerance
    comparison: Comparison | None = None
    failures: list[str] = field(default_factory=list)
    not_run_reason: str | None = None
    dataset: str | None = None
    backend: str | None = None

    @property
    def passed(self) -> bool | None:
        """True/False when checked, None when it could not run here."""
        if self.comparison is None:
            return None
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``artifact.parity``: ``Comparison.to_dict()`` plus the verdict."""
        data: dict[str, Any] = self.comparison.to_dict() if self.comparison else {}
        data.update(
            passed=self.passed,
            tolerance=self.tolerance.to_dict(),
            failures=list(self.failures),
            dataset=self.dataset,
            count=self.comparison.count if self.comparison else 0,
            backend=self.backend,
        )
        if self.not_run_reason is not None:
            data.update(status="not_run", reason=self.not_run_reason)
        else:
            data["status"] = "passed" if self.passed else "failed"
        return data

    def message(self) -> str:
        """``onnx-int8: accuracy dropped ... (n=360, max_abs=...)`` for errors and logs."""
        if self.not_run_reason is not None:
            return f"{self.artifact}: parity not run ({self.not_run_reason})"
        if self.comparison is None:
            return f"{self.artifact}: parity not checked"
        if self.failures:
            return (
                f"{self.artifact} fails its {self.precision} tolerance "
                f"({self.tolerance.description}): "
                + "; ".join(self.failures)
                + f" [{self.comparison.summary()}]"
            )
        return f"{self.artifact} passed: {self.comparison.summary()}"


def make_reference(
    model: torch.nn.Module, inputs: np.ndarray, labels: np.ndarray, dataset: str, split: str
) -> ReferenceSet:
    """The model's fp32 eval-mode logits on the CPU for ``inputs``, with their labels."""
    import torch

    from edgeport.train.loop import predict_logits

    if len(inputs) == 0:
        raise ExportError(f"no held-out images in {dataset!r} split {split!r} to check parity on")
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    logits = predict_logits(model.to("cpu"), torch.from_numpy(inputs)).numpy()
    return ReferenceSet(
        inputs=inputs,
        labels=np.asarray(labels, dtype=np.int64),
        logits=logits,
        dataset=dataset,
        split=split,
    )


def check_artifact(
    name: str,
    precision: str,
    path: Path,
    reference: ReferenceSet,
    batch: BatchRange,
    *,
    backend: str = "onnxruntime-cpu",
) -> ParityResult:
    """Run ``path`` through ``edgeport.runtime.load`` and judge it against ``reference``."""
    from edgeport.runtime import load

    tolerance = tolerance_for(precision)
    result = ParityResult(name, precision, tolerance, dataset=reference.dataset, backend=backend)
    log.info("parity: %s on %d %s images (%s)", name, reference.count, reference.dataset, backend)
    with load(path, backend=backend, verify=False) as model:
        candidate = run_in_chunks(model.run, reference.inputs, batch.max, batch.min)
    result.comparison = compare_logits(
        reference.logits, candidate, reference.labels, atol=tolerance.atol, rtol=tolerance.rtol
    )
    result.failures = tolerance.failures(result.comparison)
    log.info("parity: %s", result.message())
    return result


def not_run(name: str, precision: str, reason: str, dataset: str | None) -> ParityResult:
    result = ParityResult(
        name, precision, tolerance_for(precision), not_run_reason=reason, dataset=dataset
    )
    log.info("parity: %s", result.message())
    return result
