"""The parity gate: every exported artifact against the PyTorch model on the reference inputs.

The reference is the PyTorch module in eval mode (fp32, CPU) on the parity inputs (held-out test
images for a training run; the example, parity and calibration inputs for any other module).
Each artifact runs through ``edgeport.runtime`` exactly as a device would load it, and
``edgeport.runtime.compare.judge`` judges every output with the tolerance of its precision and
kind; the result is a ``Verdict``, stored as ``artifact.parity``. Engines are judged the same way
where a GPU can run them; elsewhere the verdict is ``not_run``, with why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.export.samples import Batch, count
from edgeport.runtime.bundle import Artifact
from edgeport.runtime.card import ModelCard
from edgeport.runtime.compare import Verdict, judge, output_kind
from edgeport.runtime.errors import ConfigError, EdgeportError, ExportError
from edgeport.runtime.specs import TensorSpec

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TORCH_CHUNK = 32  # samples per PyTorch call while computing the reference


@dataclass(frozen=True)
class ReferenceSet:
    """Parity inputs by name, the reference outputs on them (PyTorch fp32, or an ONNX-in
    source file's own), and labels when known."""

    inputs: Batch
    outputs: Batch
    labels: np.ndarray | None = None
    dataset: str | None = None
    split: str | None = None
    producer: str = "PyTorch fp32"  # what made the outputs

    @property
    def count(self) -> int:
        return count(self.inputs)

    @property
    def accuracy(self) -> float | None:
        """Top-1 accuracy of the first output against the labels (classifiers)."""
        if self.labels is None:
            return None
        logits = next(iter(self.outputs.values()))
        return float((logits.argmax(axis=1) == self.labels).mean())

    @property
    def description(self) -> str:
        where = " ".join(p for p in (self.dataset, self.split) if p) or "the parity inputs"
        return f"{self.producer} on {self.count} samples of {where}"


def flatten_outputs(value: Any, prefix: str = "output") -> list[tuple[str, torch.Tensor]]:
    """A forward's result (tensor, tuple/list, dict, nested) as (default name, tensor) pairs,
    in the order torch.onnx flattens them."""
    import torch

    if isinstance(value, torch.Tensor):
        return [(prefix, value)]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
        top = prefix == "output"
    elif isinstance(value, list | tuple):
        items = [(str(i), v) for i, v in enumerate(value)]
        top = False
    else:
        raise ConfigError(
            f"the module returned a {type(value).__name__}; export needs tensors (one, a tuple "
            "or a dict of them)"
        )
    out = []
    for key, item in items:
        out += flatten_outputs(item, key if top else f"{prefix}_{key}")
    return out


def describe(batch: Mapping[str, np.ndarray]) -> str:
    """``image float32 [2, 3, 16, 16], ids int64 [2, 7]``"""
    return ", ".join(f"{n} {a.dtype} {list(a.shape)}" for n, a in batch.items())


def torch_outputs(module: torch.nn.Module, inputs: Batch, names: Sequence[str] | None) -> Batch:
    """The module's outputs on ``inputs`` (in chunks), by name; every output must have the
    sample axis first, as bundles store and check outputs per sample."""
    import torch

    parts: list[list[tuple[str, torch.Tensor]]] = []
    total = count(inputs)
    with torch.inference_mode():
        for start in range(0, total, TORCH_CHUNK):
            args = [
                torch.from_numpy(np.ascontiguousarray(a[start : start + TORCH_CHUNK]))
                for a in inputs.values()
            ]
            try:
                result = module(*args)
            except Exception as exc:  # the user's code: say where it failed, keep the cause
                raise ExportError(
                    f"the module's forward failed on inputs {describe(inputs)}: "
                    f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                ) from exc
            parts.append(flatten_outputs(result))
    default = [name for name, _ in parts[0]]
    names = list(names) if names is not None else default
    if len(names) != len(default):
        raise ConfigError(
            f"{len(names)} output names {names} for a module that returns {len(default)} "
            f"tensors ({default})"
        )
    return _join(parts, names, total)


def _join(parts: list[list[tuple[str, Any]]], names: list[str], total: int) -> Batch:
    out: Batch = {}
    for index, name in enumerate(names):
        arrays = [part[index][1].detach().cpu().numpy() for part in parts]
        chunk = min(total, TORCH_CHUNK)
        if arrays[0].ndim == 0 or arrays[0].shape[0] != chunk:
            raise ConfigError(
                f"output {name!r} has shape {list(arrays[0].shape)} for a batch of {chunk}: its "
                "first axis is not the sample axis. edgeport stores and checks outputs per "
                "sample; return it with a batch axis (e.g. x.expand(batch, *x.shape))"
            )
        out[name] = np.concatenate(arrays)
    return out


def output_kinds(outputs: Sequence[TensorSpec], task: str) -> dict[str, str]:
    """How each output is judged (``compare.output_kind``)."""
    classifier = task == "classification"
    return {
        spec.name: output_kind(spec, classifier=classifier, index=index)
        for index, spec in enumerate(outputs)
    }


def check_artifact(
    name: str,
    precision: str,
    path: Path,
    reference: ReferenceSet,
    kinds: Mapping[str, str],
    *,
    backend: str = "onnxruntime-cpu",
    class_names: Sequence[str] = (),
    backend_options: Mapping[str, Any] | None = None,
    artifact: Artifact | None = None,
    card: ModelCard | None = None,
) -> Verdict:
    """Run ``path`` through ``edgeport.runtime.load`` (with ``backend_options``; as
    ``artifact``, its manifest entry to be, describes it, when given) and judge it against
    ``reference``."""
    from edgeport.runtime import load
    from edgeport.runtime.loader import open_artifact
    from edgeport.runtime.tools.check import run_batches  # check runs candidates the same way

    start = time.perf_counter()
    log.info("parity: %s on %s (%s)", name, reference.description, backend)
    try:
        if artifact is None:
            # a file carries its precision, except bf16: the fp32 file run with bf16 arithmetic
            run_as = "bf16" if precision == "bf16" else None
            model = load(
                path,
                backend=backend,
                precision=run_as,
                verify=False,
                backend_options=backend_options,
            )
        else:
            model = open_artifact(path, artifact, card, backend)
        with model:
            candidate = run_batches(model, [reference.inputs], rechunk=True)
    except EdgeportError as exc:
        raise ExportError(f"{name} could not run on {backend}: {exc}") from exc
    checks = judge(
        reference.outputs,
        candidate,
        precision=precision,
        kinds=dict(kinds),
        labels=reference.labels,
    )
    verdict = Verdict(
        artifact=name,
        precision=precision,
        backend=backend,
        status="failed" if any(c.failures for c in checks) else "passed",
        outputs=checks,
        count=reference.count,
        reference=reference.description,
        seconds=time.perf_counter() - start,
    )
    log.info("parity: %s", verdict.message())
    return verdict


def not_run(name: str, precision: str, backend: str, reason: str) -> Verdict:
    verdict = Verdict(name, precision, backend, "not_run", reason=reason)
    log.info("parity: %s", verdict.message())
    return verdict


def headline(parity: Mapping[str, Any] | None) -> str:
    """The numbers of a stored verdict in one line: per output max abs error and cosine
    (logits: top-1 agreement and accuracy), or why it was not run."""
    if not parity:
        return "unchecked"
    if parity.get("status") not in ("passed", "failed"):
        return str(parity.get("reason") or parity.get("status"))
    outputs = parity.get("outputs") or []
    parts = []
    for out in outputs:
        c = out["comparison"]
        text = f"max_abs={c['max_abs']:.2g}"
        if out["kind"] == "logits":
            text += f" top1={c['top1_agreement']:.2%}"
            if c.get("accuracy_candidate") is not None:
                text += f" acc={c['accuracy_candidate']:.2%}"
        elif c.get("cosine_min") is not None:
            text += f" cos={c['cosine_min']:.6f}"
        parts.append(f"{out['name']} {text}" if len(outputs) > 1 else text)
    return "; ".join(parts)
