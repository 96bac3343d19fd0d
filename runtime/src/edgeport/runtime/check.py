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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeport.runtime.backends.onnxrt import ort_errors
from edgeport.runtime.bench import (
    BASELINE_GROUP,
    EAGER,
    load_reference_array,
    short_reason,
)
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

log = logging.getLogger(__name__)

CHECK_SCHEMA = "edgeport.check"
CHECK_SCHEMA_VERSION = 1
DATASET_GROUP = "edgeport.datasets"
REFERENCES = ("auto", "torch", "stored")
ONNX_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt")
ENGINE_BACKENDS = ("tensorrt",)
DEFAULT_ONNX_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda")
RUN_CHUNK = 64
# Per-layer diagnosis: relative L2 error (||cand - ref|| / ||ref||) above which a tensor is
# called mismatched. A diagnostic threshold, not a pass/fail tolerance.
PER_LAYER_REL_L2 = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}
PER_LAYER_SAMPLES = 64
PER_LAYER_CHUNK = 8
OPT_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class LayerDiff:
    """One intermediate tensor of the candidate against the fp32 ONNX model."""

    name: str
    op_type: str
    node: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    rel_l2: float
    cosine: float
    input_rel_l2: float  # largest rel_l2 among this node's compared inputs (0 for the first)
    via: str  # "name" (same tensor name) or "dequantize" (the DequantizeLinear output of it)

    @property
    def added_error(self) -> float:
        return self.rel_l2 - self.input_rel_l2

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "node": self.node,
            "shape": list(self.shape),
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "rel_l2": self.rel_l2,
            "cosine": self.cosine,
            "input_rel_l2": self.input_rel_l2,
            "added_error": self.added_error,
            "via": self.via,
        }


@dataclass(frozen=True)
class PerLayerReport:
    """Where the candidate's intermediate tensors start to differ from the fp32 model's."""

    reference: str
    candidate: str
    samples: int
    threshold: float
    layers: tuple[LayerDiff, ...]
    unmatched: int
    # logits rel L2 of the candidate FILE (not the exposed copy) at each ONNX Runtime
    # graph-optimisation level: fused kernels can differ from the graph's own arithmetic
    optimization_levels: dict[str, float] = field(default_factory=dict)

    @property
    def optimization_culprit(self) -> str | None:
        """The first optimisation level whose logits exceed the threshold when the
        unoptimised graph's do not: then the mismatch comes from ORT's fused kernels."""
        levels = self.optimization_levels
        base = levels.get(OPT_LEVELS[0])
        if base is None or base > self.threshold:
            return None
        return next((lv for lv in OPT_LEVELS[1:] if levels.get(lv, 0.0) > self.threshold), None)

    @property
    def first_mismatch(self) -> LayerDiff | None:
        """The first tensor (in fp32 graph order) whose rel_l2 exceeds the threshold."""
        return next((layer for layer in self.layers if layer.rel_l2 > self.threshold), None)

    @property
    def largest_jump(self) -> LayerDiff | None:
        """The tensor whose node added the most error over its inputs' error."""
        return max(self.layers, key=lambda layer: layer.added_error, default=None)

    def summary(self) -> str:
        first, jump = self.first_mismatch, self.largest_jump
        start = (
            f"mismatch starts at {first.name!r} ({first.op_type}, rel L2 {first.rel_l2:.3g} > "
            f"{self.threshold:g})"
            if first
            else f"no tensor exceeds rel L2 {self.threshold:g}"
        )
        if jump is not None:
            start += (
                f"; largest added error at {jump.name!r} ({jump.op_type}): rel L2 "
                f"{jump.input_rel_l2:.3g} -> {jump.rel_l2:.3g}"
            )
        culprit = self.optimization_culprit
        if culprit is not None:
            levels = self.optimization_levels
            start += (
                f". The graph itself agrees (logits rel L2 {levels[OPT_LEVELS[0]]:.3g} without "
                f"optimisation) but ONNX Runtime's {culprit} optimisations do not "
                f"({levels[culprit]:.3g}): the mismatch comes from fused kernels (for int8 on "
                "CPUs without VNNI, typically int8 saturation; quantize with reduce_range)"
            )
        return start

    def to_dict(self) -> dict[str, Any]:
        first, jump = self.first_mismatch, self.largest_jump
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "samples": self.samples,
            "threshold_rel_l2": self.threshold,
            "first_mismatch": first.name if first else None,
            "largest_jump": jump.name if jump else None,
            "summary": self.summary(),
            "matched": len(self.layers),
            "unmatched": self.unmatched,
            "optimization_levels": dict(self.optimization_levels),
            "optimization_culprit": self.optimization_culprit,
            "layers": [layer.to_dict() for layer in self.layers],
        }


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


def torch_reference_class() -> tuple[Any | None, str | None]:
    """The ``torch`` baseline class from the ``edgeport.baselines`` entry points, or why not."""
    eps = [ep for ep in entry_points(group=BASELINE_GROUP) if ep.name == EAGER]
    if not eps:
        return None, f"edgeport-train is not installed (no {EAGER!r} baseline entry point)"
    try:
        cls = eps[0].load()
    except ImportError as exc:
        return None, f"the PyTorch baseline cannot be imported: {exc}"
    reason = cls.unavailable_reason()
    return (None, reason) if reason else (cls, None)


def dataset_loader() -> Callable[..., Any] | None:
    """``load_eval_arrays`` from the ``edgeport.datasets`` entry point ``arrays``, if installed."""
    for ep in entry_points(group=DATASET_GROUP):
        if ep.name == "arrays":
            try:
                return ep.load()
            except ImportError as exc:
                log.info("dataset loader unavailable: %s", exc)
    return None


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
    comparison = tolerance.compare(ref.logits, candidate, ref.labels)
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
    from edgeport.runtime.envinfo import bundle_fingerprint, collect_environment

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


# --------------------------------------------------------------------------------------------
# Per-layer comparison of two ONNX models


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable(
            "--per-layer needs the onnx package to expose intermediate tensors: pip install onnx"
        ) from exc
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "--per-layer runs the models with ONNX Runtime: pip install 'edgeport-runtime[cpu]'"
        ) from exc
    return onnx, onnxruntime


class _Tensor(NamedTuple):
    """A node output of a model, in graph order, with the node that makes it."""

    name: str
    op_type: str
    node: str
    inputs: tuple[str, ...]  # the node's (non-empty) inputs


def _expose_all(onnx: Any, path: Path) -> tuple[bytes, list[_Tensor], dict[str, str]]:
    """A serialized copy of the model with every typed node output added as a graph output.

    Returns the bytes, the node outputs in graph order, and a map from an original tensor name
    to the DequantizeLinear output that carries its quantized value.
    """
    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError) as exc:
        log.info("shape inference failed on %s (%s); using declared types only", path.name, exc)
        inferred = model
    graph = inferred.graph
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in (*graph.value_info, *graph.output, *graph.input)
        if vi.type.HasField("tensor_type")
    }
    existing = {o.name for o in model.graph.output}
    order: list[_Tensor] = []
    producer: dict[str, Any] = {}
    for node in model.graph.node:
        inputs = tuple(i for i in node.input if i)
        for out in node.output:
            if not out:
                continue
            producer[out] = node
            order.append(_Tensor(out, node.op_type, node.name, inputs))
            if out not in existing and types.get(out):
                model.graph.output.append(onnx.helper.make_tensor_value_info(out, types[out], None))
                existing.add(out)
    dequantized: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not node.input:
            continue
        q = producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input:
            dequantized[q.input[0]] = node.output[0]
    return model.SerializeToString(), order, dequantized


def _session(ort: Any, model: bytes | str, level: str = "ORT_DISABLE_ALL") -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3
    errors: tuple[type[BaseException], ...] = (*ort_errors(), ValueError)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except errors as exc:
        raise ModelLoadError(f"ONNX Runtime cannot open the per-layer copy: {exc}") from exc


def _run_session(sess: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    x = images.astype(np.float16) if "float16" in inp.type else images
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(names, {inp.name: x})
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


class _ErrorSums:
    """Streaming sums for one tensor's error statistics over several chunks of images."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.diff_sq = self.ref_sq = self.cand_sq = self.dot = self.abs_sum = 0.0
        self.max_abs = 0.0
        self.size = 0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = ref.astype(np.float64), cand.astype(np.float64)
        d = c - r
        self.diff_sq += float((d * d).sum())
        self.ref_sq += float((r * r).sum())
        self.cand_sq += float((c * c).sum())
        self.dot += float((r * c).sum())
        self.abs_sum += float(np.abs(d).sum())
        self.max_abs = max(self.max_abs, float(np.abs(d).max()) if d.size else 0.0)
        self.size += d.size

    @property
    def rel_l2(self) -> float:
        return math.sqrt(self.diff_sq) / max(math.sqrt(self.ref_sq), 1e-12)

    @property
    def cosine(self) -> float:
        norms = math.sqrt(self.ref_sq) * math.sqrt(self.cand_sq)
        return self.dot / norms if norms > 0 else 1.0


def _rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    r, c = reference.astype(np.float64), candidate.astype(np.float64)
    return float(np.linalg.norm(c - r)) / max(float(np.linalg.norm(r)), 1e-12)


def compare_layers(
    reference_path: str | Path,
    candidate_path: str | Path,
    images: np.ndarray,
    *,
    precision: str,
    chunk: int = PER_LAYER_CHUNK,
) -> PerLayerReport:
    """Compare every intermediate tensor of ``candidate_path`` with ``reference_path`` (fp32).

    Tensors are matched by name; for a Q/DQ model a tensor missing under its own name is matched
    through the DequantizeLinear output of its QuantizeLinear. Both copies run with ONNX Runtime
    on the CPU with graph optimisations off (exposed tensors cannot be fused away anyway), in
    chunks of ``chunk`` images. The candidate file itself is also run at every optimisation
    level, to tell a mismatch of the graph from one of ORT's fused kernels.
    """
    if len(images) == 0:
        raise ConfigError("per-layer comparison needs at least one image")
    onnx, ort = _onnx_modules()
    reference_path, candidate_path = Path(reference_path), Path(candidate_path)
    ref_bytes, order, _ = _expose_all(onnx, reference_path)
    cand_bytes, _, dequantized = _expose_all(onnx, candidate_path)
    ref_sess, cand_sess = _session(ort, ref_bytes), _session(ort, cand_bytes)
    ref_output = ref_sess.get_outputs()[0].name
    chunks = [
        np.ascontiguousarray(images[start : start + chunk], dtype=np.float32)
        for start in range(0, len(images), chunk)
    ]

    sums: dict[str, _ErrorSums] = {}
    via: dict[str, str] = {}
    unmatched: set[str] = set()
    ref_logits = []
    for x in chunks:
        ref_values, cand_values = _run_session(ref_sess, x), _run_session(cand_sess, x)
        ref_logits.append(ref_values[ref_output])
        for name, *_ in order:
            r = ref_values.get(name)
            if r is None or not np.issubdtype(r.dtype, np.floating):
                continue
            c, how = cand_values.get(name), "name"
            if c is None and name in dequantized:
                c, how = cand_values.get(dequantized[name]), "dequantize"
            if c is None or c.shape != r.shape or not np.issubdtype(c.dtype, np.floating):
                unmatched.add(name)
                continue
            sums.setdefault(name, _ErrorSums(tuple(int(v) for v in r.shape[1:]))).add(r, c)
            via[name] = how

    layers: list[LayerDiff] = []
    errors: dict[str, float] = {}
    for name, op_type, node, inputs in order:
        acc = sums.get(name)
        if acc is None or name in unmatched:
            continue
        errors[name] = acc.rel_l2
        inputs_err = [errors[i] for i in inputs if i in errors]
        layers.append(
            LayerDiff(
                name=name,
                op_type=op_type,
                node=node,
                shape=acc.shape,
                max_abs=acc.max_abs,
                mean_abs=acc.abs_sum / max(acc.size, 1),
                rel_l2=acc.rel_l2,
                cosine=acc.cosine,
                input_rel_l2=max(inputs_err, default=0.0),
                via=via[name],
            )
        )
    reference_logits = np.concatenate(ref_logits)
    levels = {}
    for level in OPT_LEVELS:
        sess = _session(ort, str(candidate_path), level)
        out_name = sess.get_outputs()[0].name
        outs = [_run_session(sess, x)[out_name] for x in chunks]
        levels[level] = _rel_l2(reference_logits, np.concatenate(outs))
    return PerLayerReport(
        reference=reference_path.name,
        candidate=candidate_path.name,
        samples=len(images),
        threshold=PER_LAYER_REL_L2.get(precision, 1e-2),
        layers=tuple(layers),
        unmatched=len(unmatched),
        optimization_levels=levels,
    )
