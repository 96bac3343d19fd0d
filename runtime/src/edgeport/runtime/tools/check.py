"""``edgeport check``: does every exported artifact still give the PyTorch model's answers?

For each artifact this machine can run (ONNX on ONNX Runtime CPU and, with a GPU, CUDA; engines
on TensorRT), its logits on real test images are compared with a reference:

- **torch** (when edgeport-train and torch are installed): the PyTorch model rebuilt from the
  bundle's weights and card, run in fp32 on the CPU; images from ``--data`` (the
  ``edgeport.datasets`` entry point ``arrays``) or the bundle's stored reference images.
- **stored** (a torch-free device): the bundle's stored reference images, labels and PyTorch
  logits (``reference/*.npy``).

Statistics and pass/fail rules come from :mod:`edgeport.runtime.compare` (``TOLERANCES``, one
per precision, Polygraphy atol/rtol semantics). Artifacts that cannot run here are listed as
skipped with the reason. ``per_layer`` compares every intermediate tensor of an fp16/int8 ONNX
artifact with the fp32 ONNX model to show where a mismatch starts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.registry import short_reason
from edgeport.runtime.bundle import Artifact, Manifest, resolve_inside, verify_artifact
from edgeport.runtime.compare import Comparison, Tolerance, compare_logits, tolerance_for
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    DatasetError,
    EdgeportError,
    ModelLoadError,
)
from edgeport.runtime.model import run_in_chunks
from edgeport.runtime.plugins import DATASET_GROUP, dataset_loader, torch_reference_class
from edgeport.runtime.reference import load_reference_array
from edgeport.runtime.tools.per_layer import PER_LAYER_SAMPLES, PerLayerReport, compare_layers

log = logging.getLogger(__name__)

CHECK_SCHEMA = "edgeport.check"
CHECK_SCHEMA_VERSION = 1
REFERENCES = ("auto", "torch", "stored")
ONNX_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
ENGINE_BACKENDS = ("tensorrt",)
DEFAULT_ONNX_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda")
RUN_CHUNK = 64


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class ArtifactCheck:
    """The verdict on one artifact run by one backend."""

    artifact: str
    format: str
    precision: str
    backend: str
    status: str  # "passed", "failed", "error" (could not be run), "skipped" (cannot run here)
    reason: str | None = None
    comparison: Comparison | None = None
    tolerance: Tolerance | None = None
    failures: list[str] = field(default_factory=list)
    worst: list[dict[str, Any]] = field(default_factory=list)
    per_layer: PerLayerReport | None = None
    per_layer_error: str | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.artifact} on {self.backend}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "format": self.format,
            "precision": self.precision,
            "backend": self.backend,
            "status": self.status,
            "reason": self.reason,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "tolerance": self.tolerance.to_dict() if self.tolerance else None,
            "failures": list(self.failures),
            "worst": self.worst,
            "per_layer": self.per_layer.to_dict() if self.per_layer else None,
            "per_layer_error": self.per_layer_error,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class CheckReport:
    """Every artifact's verdict, the reference it was judged against, and the environment."""

    bundle: dict[str, Any]
    reference: dict[str, Any]
    checks: list[ArtifactCheck]
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def checked(self) -> list[ArtifactCheck]:
        return [c for c in self.checks if c.status in ("passed", "failed", "error")]

    @property
    def failed(self) -> list[ArtifactCheck]:
        return [c for c in self.checks if c.status in ("failed", "error")]

    @property
    def skipped(self) -> list[ArtifactCheck]:
        return [c for c in self.checks if c.status == "skipped"]

    @property
    def passed(self) -> bool:
        """True when at least one artifact was checked and none failed."""
        return bool(self.checked) and not self.failed

    @property
    def verdict(self) -> str:
        """One line: passed, FAILED naming the artifacts, or nothing checked."""
        if not self.checked:
            return "nothing checked: no artifact of this bundle can run on this machine"
        if self.failed:
            names = ", ".join(f"{c.label} ({c.status})" for c in self.failed)
            return f"FAILED: {names}"
        return f"passed: {len(self.checked)} artifact run(s) within tolerance"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CHECK_SCHEMA,
            "schema_version": CHECK_SCHEMA_VERSION,
            "created": self.created,
            "passed": self.passed,
            "verdict": self.verdict,
            "bundle": self.bundle,
            "reference": self.reference,
            "checks": [c.to_dict() for c in self.checks],
            "environment": self.environment,
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------------------------
# The reference


@dataclass(frozen=True)
class Reference:
    """Inputs, labels and reference logits every artifact is compared against."""

    images: np.ndarray
    labels: np.ndarray | None
    logits: np.ndarray
    kind: str  # "torch" or "stored"
    description: str
    dataset: str | None
    split: str | None
    class_names: tuple[str, ...]
    consistency: dict[str, float] | None = None  # stored logits vs rebuilt PyTorch, when both

    def to_dict(self) -> dict[str, Any]:
        acc = None
        if self.labels is not None:
            acc = float((self.logits.argmax(axis=1) == self.labels).mean())
        return {
            "kind": self.kind,
            "description": self.description,
            "dataset": self.dataset,
            "split": self.split,
            "count": len(self.images),
            "accuracy": acc,
            "stored_vs_torch": self.consistency,
        }


def _stored(
    bundle_dir: Path, manifest: Manifest, limit: int | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    ref = manifest.reference
    if not ref:
        raise ConfigError(
            f"bundle {bundle_dir} stores no reference images and logits, and PyTorch is not "
            "available to compute them: install edgeport-train or re-export the bundle"
        )
    arrays = [
        load_reference_array(bundle_dir, manifest, key) for key in ("inputs", "labels", "logits")
    ]
    images, labels, logits = arrays
    if images is None or logits is None:
        raise ModelLoadError(
            f"bundle {bundle_dir}: the manifest's reference lacks inputs or logits"
        )
    if len(images) != len(logits) or (labels is not None and len(labels) != len(images)):
        raise ModelLoadError(
            f"bundle {bundle_dir}: reference inputs ({len(images)}), labels "
            f"({None if labels is None else len(labels)}) and logits ({len(logits)}) differ "
            "in count"
        )
    sl = slice(None, limit)
    return (
        np.ascontiguousarray(images[sl], dtype=np.float32),
        None if labels is None else labels[sl].astype(np.int64),
        logits[sl].astype(np.float32),
    )


def build_reference(
    bundle_dir: Path,
    manifest: Manifest,
    *,
    reference: str = "auto",
    data: str | None = None,
    data_root: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
    warnings: list[str] | None = None,
) -> Reference:
    """Choose and compute the reference (see the module docstring)."""
    warnings = warnings if warnings is not None else []
    if reference not in REFERENCES:
        raise ConfigError(f"unknown reference {reference!r}; choose from {list(REFERENCES)}")
    card = manifest.card
    cls, why_not = torch_reference_class()
    if reference == "torch" and cls is None:
        raise BackendUnavailable(f"a PyTorch reference was asked for but {why_not}")
    stored_info = manifest.reference or {}

    if cls is None or reference == "stored":
        if data is not None:
            why = f"without PyTorch ({why_not})" if cls is None else "with --reference stored"
            warnings.append(
                f"--data {data} ignored: {why} the bundle's stored reference images and logits "
                "are used"
            )
        images, labels, logits = _stored(bundle_dir, manifest, limit)
        return Reference(
            images=images,
            labels=labels,
            logits=logits,
            kind="stored",
            description="the bundle's stored PyTorch fp32 logits on its reference images",
            dataset=stored_info.get("dataset"),
            split=stored_info.get("split"),
            class_names=card.class_names,
        )

    consistency = None
    stored_logits = None
    dataset: str | None
    used_split: str | None
    if data is not None:
        loader = dataset_loader()
        if loader is None:
            raise DatasetError(
                f"--data {data} needs edgeport-train's dataset loader (entry point "
                f"{DATASET_GROUP}:arrays), which is not installed"
            )
        arrays = loader(data, card, split=split, data_root=data_root, limit=limit)
        images = np.ascontiguousarray(arrays.images, dtype=np.float32)
        labels = np.asarray(arrays.labels, dtype=np.int64)
        dataset, used_split = data, split
        description = f"PyTorch fp32 (CPU, eval) rebuilt from the bundle, on {data}/{split}"
    else:
        images, labels, stored_logits = _stored(bundle_dir, manifest, limit)
        dataset, used_split = stored_info.get("dataset"), stored_info.get("split")
        description = "PyTorch fp32 (CPU, eval) rebuilt from the bundle, on its reference images"
    if len(images) == 0:
        raise DatasetError(f"no images to check with (dataset {dataset!r}, limit {limit})")
    log.info("computing the PyTorch reference on %d images", len(images))
    baseline = cls(bundle_dir, manifest, device="cpu", precision="fp32")
    try:
        logits = run_in_chunks(baseline.run, images, RUN_CHUNK).astype(np.float32, copy=False)
    finally:
        baseline.close()
    if stored_logits is not None:
        rebuilt = compare_logits(stored_logits, logits)
        consistency = {"max_abs": rebuilt.max_abs, "top1_agreement": rebuilt.top1_agreement}
        if consistency["max_abs"] > 1e-3:
            warnings.append(
                f"the bundle's stored reference logits differ from the rebuilt PyTorch model by "
                f"up to {consistency['max_abs']:.3g}: weights and logits may come from "
                "different runs"
            )
    return Reference(
        images=images,
        labels=labels,
        logits=logits,
        kind="torch",
        description=description,
        dataset=dataset,
        split=used_split,
        class_names=card.class_names,
        consistency=consistency,
    )


# --------------------------------------------------------------------------------------------
# Running the artifacts


def _backends_for(artifact: Artifact, backends: Sequence[str] | None) -> list[str]:
    if artifact.format == "onnx":
        wanted = backends or DEFAULT_ONNX_BACKENDS
        return [b for b in wanted if b in ONNX_BACKENDS]
    wanted = backends or ENGINE_BACKENDS
    return [b for b in wanted if b in ENGINE_BACKENDS]


def _worst(comparison: Comparison, ref: Reference, candidate: np.ndarray) -> list[dict[str, Any]]:
    names = ref.class_names
    out = []
    for i in comparison.worst_indices:
        r, c = int(ref.logits[i].argmax()), int(np.nan_to_num(candidate[i]).argmax())
        entry: dict[str, Any] = {
            "index": int(i),
            "reference_class": names[r] if r < len(names) else r,
            "candidate_class": names[c] if c < len(names) else c,
            "agree": r == c,
            "max_abs": float(np.abs(candidate[i] - ref.logits[i]).max()),
        }
        if ref.labels is not None:
            label = int(ref.labels[i])
            entry["label"] = names[label] if label < len(names) else label
        out.append(entry)
    return out


def check_artifact(
    bundle_dir: Path,
    artifact: Artifact,
    backend: str,
    ref: Reference,
    *,
    threads: int | None = None,
) -> ArtifactCheck:
    """Run one artifact with one backend over the reference images and judge it."""
    from edgeport.runtime.model import load

    result = ArtifactCheck(artifact.name, artifact.format, artifact.precision, backend, "error")
    started = time.perf_counter()
    try:
        model = load(bundle_dir, backend=backend, precision=artifact.precision, threads=threads)
    except BackendUnavailable as exc:
        result.status, result.reason = "skipped", short_reason(str(exc))
        return result
    except EdgeportError as exc:
        result.reason = f"cannot load: {exc}"
        return result
    try:
        loaded = model.artifact.name if model.artifact is not None else None
        if loaded != artifact.name:
            result.status = "skipped"
            result.reason = f"backend {backend} picked artifact {loaded!r} for {artifact.precision}"
            return result
        chunk = min(RUN_CHUNK, model.batch_range.max)
        candidate = run_in_chunks(model.run, ref.images, chunk, model.batch_range.min)
    except EdgeportError as exc:
        result.reason = f"run failed: {exc}"
        return result
    finally:
        model.close()
    tolerance = tolerance_for(artifact.precision)
    comparison = compare_logits(
        ref.logits, candidate, ref.labels, atol=tolerance.atol, rtol=tolerance.rtol
    )
    result.comparison, result.tolerance = comparison, tolerance
    result.failures = tolerance.failures(comparison)
    result.status = "failed" if result.failures else "passed"
    result.worst = _worst(comparison, ref, candidate)
    result.seconds = time.perf_counter() - started
    return result


def check(
    bundle_dir: str | Path,
    *,
    data: str | None = None,
    data_root: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
    reference: str = "auto",
    artifacts: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    threads: int | None = None,
    per_layer: bool = False,
    per_layer_samples: int = PER_LAYER_SAMPLES,
    progress: Callable[[str], None] | None = None,
) -> CheckReport:
    """Check every artifact of the bundle (or those named) that this machine can run."""
    from edgeport.runtime.tools.envinfo import bundle_fingerprint, collect_environment

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    unknown = [b for b in backends or () if b not in (*ONNX_BACKENDS, *ENGINE_BACKENDS)]
    if unknown:
        raise ConfigError(
            f"unknown backends {unknown}; choose from {[*ONNX_BACKENDS, *ENGINE_BACKENDS]}"
        )
    say = progress or (lambda msg: log.info("%s", msg))
    bundle_dir = Path(bundle_dir)
    manifest = Manifest.load(bundle_dir)
    selected = list(manifest.artifacts)
    if artifacts:
        selected = [manifest.artifact(name) for name in artifacts]
    warnings: list[str] = []
    ref = build_reference(
        bundle_dir,
        manifest,
        reference=reference,
        data=data,
        data_root=data_root,
        split=split,
        limit=limit,
        warnings=warnings,
    )
    say(f"reference: {ref.description} ({len(ref.images)} images)")
    checks: list[ArtifactCheck] = []
    # --per-layer: each fp16/int8 ONNX artifact once, with its first run's result (the
    # per-layer run is on the CPU whatever the backend)
    layered: dict[str, tuple[Artifact, ArtifactCheck]] = {}
    for art in selected:
        art_backends = _backends_for(art, backends)
        for backend in art_backends:
            say(f"checking {art.name} on {backend}")
            result = check_artifact(bundle_dir, art, backend, ref, threads=threads)
            if result.status == "skipped":
                log.debug("skip %s: %s", result.label, result.reason)  # listed in the report
            elif result.status in ("passed", "failed") and result.comparison is not None:
                say(f"  {result.status}: {result.comparison.summary()}")
                if per_layer and art.format == "onnx" and art.precision != "fp32":
                    layered.setdefault(art.name, (art, result))
            else:
                log.warning("%s: %s", result.label, result.reason)
            checks.append(result)
        if not art_backends:
            checks.append(
                ArtifactCheck(
                    art.name,
                    art.format,
                    art.precision,
                    "-",
                    "skipped",
                    f"no selected backend runs {art.format} artifacts "
                    f"(selected: {list(backends or [])})",
                )
            )
    if layered:
        say(f"comparing the layers of {', '.join(layered)} with the fp32 ONNX model")
        _attach_per_layer(bundle_dir, manifest, list(layered.values()), ref, per_layer_samples)
    if per_layer and not any(c.per_layer for c in checks):
        warnings.append("--per-layer compares fp16/int8 ONNX artifacts; none was checked")
    return CheckReport(
        bundle=bundle_fingerprint(bundle_dir, manifest),
        reference=ref.to_dict(),
        checks=checks,
        environment=collect_environment(threads=threads),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        warnings=warnings,
    )


def _attach_per_layer(
    bundle_dir: Path,
    manifest: Manifest,
    checked: Sequence[tuple[Artifact, ArtifactCheck]],
    ref: Reference,
    samples: int,
) -> None:
    """Per-layer reports of ``checked`` (artifacts already verified by loading them) against
    the fp32 ONNX artifact, verified here once."""
    fp32 = [a for a in manifest.artifacts if a.format == "onnx" and a.precision == "fp32"]
    try:
        if not fp32:
            raise ModelLoadError("the bundle has no fp32 ONNX artifact to compare layers with")
        reference_path = verify_artifact(bundle_dir, fp32[0])
    except EdgeportError as exc:
        for _, result in checked:
            result.per_layer_error = str(exc)
        return
    for art, result in checked:
        try:
            result.per_layer = compare_layers(
                reference_path,
                resolve_inside(bundle_dir, art.path),
                ref.images[:samples],
                precision=art.precision,
            )
        except EdgeportError as exc:
            result.per_layer_error = str(exc)
