"""``edgeport check``: does a model still give its reference's answers, output by output?

MODEL is a bundle directory, an ``.onnx`` file or a TensorRT engine (``.engine``/``.plan``).

- **bundle**, reference ``torch``: PyTorch fp32 rebuilt from the bundle's weights (image
  classifiers trained by edgeport; needs edgeport-train), on ``--data`` (the
  ``edgeport.datasets`` entry point ``arrays``) or the stored reference inputs. Reference
  ``stored``: the outputs stored at export (``reference/outputs.npz``; schema-1
  ``logits.npy``) on the stored inputs. Candidates: every artifact on each selected backend of
  its format (default ONNX Runtime CPU and CUDA, engines on TensorRT).
- **.onnx**, reference ``onnxruntime-cpu``: ONNX Runtime CPU run of ``--reference-model``
  (default: the file itself) on ``--inputs`` (an .npz by input name) or on ``--samples`` seeded
  synthetic batches (``--shapes``, ``--value-range``, ``--seed``). Candidates: the file on every
  other ONNX backend, and on ONNX Runtime CPU too when the reference model is another file (as
  ``polygraphy run model.onnx --onnxrt --trt``).
- **engine**: the same, with ``--reference-model`` required; the candidate is the engine on
  TensorRT.
- **OpenVINO IR, ExecuTorch .pte, LiteRT .tflite**: the same, with ``--reference-model``
  required (any file of the same model edgeport loads: an ``.onnx`` runs on ONNX Runtime CPU,
  another format on its own runtime); the candidate is the file on its runtime.

``auto`` takes torch for a bundle when it can, else stored; onnxruntime-cpu for a file. Every
output is judged by :func:`edgeport.runtime.compare.judge` with the tolerance of the candidate's
precision and the output's kind (``compare.output_kind``: a classifier's logits, other float
tensors, integer and bool outputs exactly); the result of each (candidate, backend) run is one
:class:`~edgeport.runtime.compare.Verdict`. Whatever cannot run here is listed as skipped with
the reason. ``--per-layer`` (``tools/per_layer.py``, composed by the command) uses
:meth:`CheckReport.layer_targets`, :meth:`CheckReport.layer_reference` and
:meth:`CheckReport.layer_feeds`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.registry import (
    BACKENDS,
    ModelFile,
    backend_specs,
    candidate_unavailable_reason,
    runs_format,
    short_reason,
)
from edgeport.runtime.bundle import PRECISIONS, Manifest, verify_artifact
from edgeport.runtime.chunks import join_outputs, run_in_chunks
from edgeport.runtime.compare import Verdict, compare_logits, judge, output_kind
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    DatasetError,
    EdgeportError,
    InputError,
    ModelLoadError,
)
from edgeport.runtime.feeds import load_npz, sample_count, synthetic_feeds
from edgeport.runtime.loader import load
from edgeport.runtime.model import Model
from edgeport.runtime.plugins import DATASET_GROUP, dataset_loader, torch_reference_class
from edgeport.runtime.reference import StoredReference, load_reference
from edgeport.runtime.source import FILE_FORMATS, ModelSource, resolve_source, with_bf16
from edgeport.runtime.specs import TensorSpec, numpy_dtype
from edgeport.runtime.tools.model_record import MODEL_RECORD_FIELDS, model_record

log = logging.getLogger(__name__)

CHECK_SCHEMA = "edgeport.check"
CHECK_SCHEMA_VERSION = 3
REFERENCES = ("auto", "torch", "stored", "onnxruntime-cpu")
REFERENCE_BACKEND = "onnxruntime-cpu"
RUN_CHUNK = 64
DEFAULT_SAMPLES = 4
# settings that apply to bundles only / to bare files only, with their flags
_BUNDLE_ONLY = {
    "data": "--data",
    "data_root": "--data-root",
    "limit": "--limit",
    "artifacts": "--artifact",
}
_FILE_ONLY = {
    "reference_model": "--reference-model",
    "inputs": "--inputs",
    "shapes": "--shapes",
    "value_ranges": "--value-range",
    "tolerance": "--tolerance",
    "samples": "--samples",
    "seed": "--seed",
}


_SYNTHETIC = {k: _FILE_ONLY[k] for k in ("shapes", "value_ranges", "samples", "seed")}


# --------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class CheckSettings:
    """What to check against what (see the module docstring). ``tolerance`` judges a bare file
    with that precision's tolerances instead of the precision its metadata or name gives."""

    reference: str = "auto"
    reference_model: Path | None = None
    data: str | None = None
    data_root: Path | None = None
    split: str = "test"
    limit: int | None = None
    artifacts: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    threads: int | None = None
    inputs: Path | None = None
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    value_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    seed: int = 0
    samples: int = DEFAULT_SAMPLES
    tolerance: str | None = None

    def __post_init__(self) -> None:
        for name in ("reference_model", "data_root", "inputs"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "artifacts", tuple(self.artifacts))
        object.__setattr__(self, "backends", tuple(self.backends))
        self._validate()

    def _validate(self) -> None:
        if self.reference not in REFERENCES:
            raise ConfigError(
                f"unknown reference {self.reference!r}; choose from {list(REFERENCES)}"
            )
        for name in ("limit", "threads", "samples"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigError(f"--{name} must be >= 1, got {value}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown backends {unknown}; choose from {list(BACKENDS)}")
        if self.tolerance is not None and self.tolerance not in PRECISIONS:
            raise ConfigError(f"--tolerance must be one of {PRECISIONS}, got {self.tolerance!r}")

    def is_set(self, name: str) -> bool:
        """Whether ``name`` differs from its default."""
        default = CheckSettings.__dataclass_fields__[name]
        if default.default_factory is not dataclasses.MISSING:
            return bool(getattr(self, name))
        return getattr(self, name) != default.default

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, tuples as lists."""
        data: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, Mapping):
                value = {k: list(v) for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            data[name] = value
        return data


def make_settings(settings: CheckSettings | None, overrides: Mapping[str, Any]) -> CheckSettings:
    """``settings`` (default: all defaults) with ``overrides`` applied by field name."""
    unknown = sorted(set(overrides) - set(CheckSettings.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"unknown check settings {unknown}; known: {sorted(CheckSettings.__dataclass_fields__)}"
        )
    return dataclasses.replace(settings or CheckSettings(), **overrides)


def _validate_for(source: ModelSource, settings: CheckSettings) -> None:
    """Refuse settings that do not apply to what ``source`` is, saying what does."""
    if source.kind == "bundle":
        wrong = [flag for name, flag in _FILE_ONLY.items() if settings.is_set(name)]
        if settings.reference == REFERENCE_BACKEND or wrong:
            given = ", ".join(wrong) or f"--reference {REFERENCE_BACKEND}"
            raise ConfigError(
                f"{given}: for bare .onnx/.engine files; a bundle is checked against PyTorch "
                "(--reference torch) or its stored reference (--reference stored)"
            )
        return
    wrong = [flag for name, flag in _BUNDLE_ONLY.items() if settings.is_set(name)]
    if settings.reference in ("torch", "stored") or wrong:
        given = ", ".join(wrong) or f"--reference {settings.reference}"
        raise ConfigError(
            f"{given}: for bundles; {source.path} is a bare {source.kind} file, checked against "
            f"ONNX Runtime CPU of --reference-model on --inputs or synthetic inputs"
        )
    ref = settings.reference_model
    if source.kind == "engine" and ref is None:
        raise ConfigError(
            f"{source.path} is a TensorRT engine: give --reference-model MODEL.onnx (the ONNX "
            "model it was built from), whose ONNX Runtime CPU outputs it is compared with"
        )
    if source.kind in FILE_FORMATS.values() and ref is None:
        raise ConfigError(
            f"{source.path} runs on one runtime only ({source.kind}): give --reference-model "
            "with another file of the same model (the .onnx it came from, or a .pte, .tflite or "
            "OpenVINO .xml), whose outputs it is compared with"
        )
    if ref is not None and ref.suffix.lower() not in (".onnx", *FILE_FORMATS):
        raise ConfigError(
            f"--reference-model must be an .onnx, .xml, .pte or .tflite file, got {ref}"
        )
    synthetic = [flag for name, flag in _SYNTHETIC.items() if settings.is_set(name)]
    if settings.inputs is not None and synthetic:
        raise ConfigError(
            f"{', '.join(synthetic)}: shape synthetic inputs; with --inputs the arrays in the "
            "file are used as they are"
        )


# --------------------------------------------------------------------------------------------
# The reference


@dataclass(frozen=True)
class Reference:
    """The inputs every candidate runs and the outputs it is judged against.

    ``batches`` are the calls' feeds. With ``rechunk`` (bundles) there is one, holding every
    sample along axis 0, split for each candidate into batches its range takes; otherwise
    (files) every candidate runs each batch as one call, as the reference did. ``outputs`` are
    the per-call outputs joined by :func:`join_outputs`.
    """

    batches: tuple[dict[str, np.ndarray], ...]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    kind: str  # "torch", "stored" or "onnxruntime-cpu"
    description: str
    rechunk: bool
    dataset: str | None = None
    split: str | None = None
    class_names: tuple[str, ...] = ()
    consistency: dict[str, float] | None = None  # stored outputs vs rebuilt PyTorch, when both

    @property
    def count(self) -> int:
        """Samples: the first input's leading axis over every batch (1 per scalar batch)."""
        return sum(sample_count(b) for b in self.batches)

    def to_dict(self) -> dict[str, Any]:
        first = next(iter(self.outputs.values()))
        accuracy = None
        if self.labels is not None and first.ndim == 2 and first.dtype.kind == "f":
            accuracy = float((first.argmax(axis=1) == self.labels).mean())
        return {
            "kind": self.kind,
            "description": self.description,
            "dataset": self.dataset,
            "split": self.split,
            "count": self.count,
            "batches": len(self.batches),
            "inputs": {k: f"{v.dtype} {list(v.shape)}" for k, v in self.batches[0].items()},
            "accuracy": accuracy,
            "stored_vs_torch": self.consistency,
        }


def _torch_reference(manifest: Manifest) -> tuple[Any | None, str | None]:
    """The PyTorch baseline class, or None and why it cannot rebuild this bundle."""
    cls, why = torch_reference_class()
    if cls is None:
        return None, why
    art = manifest.artifacts[0]
    if manifest.card.task != "classification" or not manifest.card.is_image_model:
        return (
            None,
            f"PyTorch rebuilds image classifiers only; this is a {manifest.card.task} model",
        )
    if len(art.inputs) != 1 or len(art.outputs) != 1:
        return None, "PyTorch rebuilds models with one image input and one logits output only"
    if not (manifest.reference or {}).get("weights"):
        return None, "the bundle stores no PyTorch weights (reference/weights.safetensors)"
    return cls, None


def _stored(source: ModelSource, settings: CheckSettings) -> StoredReference:
    assert source.manifest is not None  # a bundle
    stored = load_reference(source.path, source.manifest)
    if stored is None:
        raise ConfigError(
            f"bundle {source.path} stores no reference inputs and outputs, and PyTorch cannot "
            "compute them; install edgeport-train (classifiers) or re-export the bundle"
        )
    return stored.head(settings.limit)


def _bundle_reference(
    source: ModelSource, settings: CheckSettings, warnings: list[str]
) -> Reference:
    manifest = source.manifest
    assert manifest is not None  # a bundle
    cls, why_not = _torch_reference(manifest)
    if settings.reference == "torch" and cls is None:
        raise BackendUnavailable(f"a PyTorch reference was asked for but {why_not}")
    if cls is not None and settings.reference != "stored":
        return _torch_outputs(source, settings, cls, warnings)
    if settings.data is not None:
        why = f"without PyTorch ({why_not})" if cls is None else "with --reference stored"
        warnings.append(
            f"--data {settings.data} ignored: {why} the bundle's stored reference inputs and "
            "outputs are used"
        )
    stored = _stored(source, settings)
    return Reference(
        batches=(stored.inputs,),
        outputs=stored.outputs,
        labels=None if stored.labels is None else stored.labels.astype(np.int64),
        kind="stored",
        description="the bundle's stored reference outputs (PyTorch fp32 at export) on its "
        "reference inputs",
        rechunk=True,
        dataset=stored.dataset,
        split=stored.split,
        class_names=manifest.card.class_names,
    )


def _dataset_images(source: ModelSource, settings: CheckSettings) -> tuple[np.ndarray, np.ndarray]:
    loader = dataset_loader()
    if loader is None:
        raise DatasetError(
            f"--data {settings.data} needs edgeport-train's dataset loader (entry point "
            f"{DATASET_GROUP}:arrays), which is not installed"
        )
    assert source.card is not None  # a bundle's card
    arrays = loader(
        settings.data,
        source.card,
        split=settings.split,
        data_root=settings.data_root,
        limit=settings.limit,
    )
    images = np.ascontiguousarray(arrays.images, dtype=np.float32)
    if len(images) == 0:
        raise DatasetError(f"no images to check with in {settings.data}/{settings.split}")
    return images, np.asarray(arrays.labels, dtype=np.int64)


def _torch_outputs(
    source: ModelSource, settings: CheckSettings, cls: Any, warnings: list[str]
) -> Reference:
    """The rebuilt PyTorch model's logits on --data or on the stored reference inputs."""
    manifest = source.manifest
    assert manifest is not None
    art = manifest.artifacts[0]
    stored = None
    labels: np.ndarray | None
    dataset: str | None
    split: str | None
    if settings.data is not None:
        images, labels = _dataset_images(source, settings)
        dataset, split = settings.data, settings.split
        on = f"{settings.data}/{settings.split}"
    else:
        stored = _stored(source, settings)
        images = stored.inputs[art.inputs[0].name].astype(np.float32, copy=False)
        labels = None if stored.labels is None else stored.labels.astype(np.int64)
        dataset, split, on = stored.dataset, stored.split, "its reference inputs"
    log.info("computing the PyTorch reference on %d images", len(images))
    baseline = cls(source.path, manifest, device="cpu", precision="fp32")
    try:
        logits = run_in_chunks(
            lambda feeds: {"logits": baseline.run(feeds["images"])}, {"images": images}, RUN_CHUNK
        )["logits"].astype(np.float32, copy=False)
    finally:
        baseline.close()
    consistency = None
    if stored is not None:
        rebuilt = compare_logits(next(iter(stored.outputs.values())).astype(np.float32), logits)
        consistency = {"max_abs": rebuilt.max_abs, "top1_agreement": rebuilt.top1_agreement}
        if rebuilt.max_abs > 1e-3:
            warnings.append(
                f"the bundle's stored reference outputs differ from the rebuilt PyTorch model "
                f"by up to {rebuilt.max_abs:.3g}: weights and outputs may come from different runs"
            )
    return Reference(
        batches=({art.inputs[0].name: images},),
        outputs={art.outputs[0].name: logits},
        labels=labels,
        kind="torch",
        description=f"PyTorch fp32 (CPU, eval) rebuilt from the bundle, on {on}",
        rechunk=True,
        dataset=dataset,
        split=split,
        class_names=manifest.card.class_names,
        consistency=consistency,
    )


def _file_inputs(
    specs: Sequence[TensorSpec], settings: CheckSettings
) -> tuple[dict[str, np.ndarray], ...]:
    if settings.inputs is not None:
        return (load_npz(settings.inputs, specs),)
    return tuple(
        synthetic_feeds(specs, settings.shapes, settings.value_ranges, settings.seed + i)
        for i in range(settings.samples)
    )


def reference_backend(path: Path) -> str:
    """The backend that runs a reference file: ONNX Runtime CPU for an .onnx, else its format's
    own runtime."""
    fmt = FILE_FORMATS.get(path.suffix.lower(), "onnx")
    if fmt == "onnx":
        return REFERENCE_BACKEND
    return next(s.name for s in backend_specs() if s.runs(fmt))


def _file_reference(source: ModelSource, settings: CheckSettings, warnings: list[str]) -> Reference:
    """The reference model's outputs (ONNX Runtime CPU for an .onnx, else its own runtime) on
    --inputs or synthetic batches."""
    path = settings.reference_model or source.path
    backend = reference_backend(path)
    with load(path, backend=backend, threads=settings.threads, check_outputs=False) as model:
        batches = _file_inputs(model.inputs, settings)
        outputs = run_batches(model, batches, rechunk=False)
        precision = model.precision
    if precision != "fp32":
        warnings.append(
            f"the reference model {path.name} is {precision}: the tolerances assume an fp32 "
            "reference; give --reference-model with the fp32 model"
        )
    if settings.inputs is not None:
        dataset = str(settings.inputs)
    else:
        dataset = f"synthetic inputs ({settings.samples} batches, seed {settings.seed})"
    return Reference(
        batches=batches,
        outputs=outputs,
        labels=None,
        kind=backend,
        description=f"{backend} run of {path.name} ({precision}) on {dataset}",
        rechunk=False,
        dataset=dataset,
        class_names=source.card.class_names if source.card else (),
    )


# --------------------------------------------------------------------------------------------
# Running a model over the reference inputs


def _model_floats(
    feeds: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]
) -> dict[str, np.ndarray]:
    """The reference's float inputs in the float dtype the model takes (an fp16 model's inputs
    are float16); everything else as it is, for the model's feed check to judge."""
    out = dict(feeds)
    for spec in specs:
        array = out.get(spec.name)
        if spec.is_float and array is not None and array.dtype.kind == "f":
            out[spec.name] = array.astype(numpy_dtype(spec.dtype), copy=False)
    return out


def _batch_bounds(specs: Sequence[TensorSpec]) -> tuple[int, int]:
    """The leading-axis (min, max) that every input with a leading axis accepts."""
    ranges = [spec.dim_range(0) for spec in specs if spec.rank]
    low = max((r[0] for r in ranges), default=1)
    high = min((r[2] for r in ranges), default=1)
    return max(low, 1), max(high, 1)


def run_batches(
    model: Model, batches: Sequence[Mapping[str, np.ndarray]], *, rechunk: bool
) -> dict[str, np.ndarray]:
    """The model's outputs over every batch (see :class:`Reference`), joined."""
    outputs = []
    for feeds in batches:
        feeds = _model_floats(feeds, model.inputs)
        if rechunk:
            low, high = _batch_bounds(model.inputs)
            outputs.append(run_in_chunks(model.infer, feeds, min(RUN_CHUNK, high), low))
        else:
            outputs.append(model.infer(feeds))
    return join_outputs(outputs)


# --------------------------------------------------------------------------------------------
# Candidates


def _default_backends(source: ModelSource, fmt: str) -> tuple[str, ...]:
    """Every backend that runs ``fmt``; for a bundle only those ``auto`` tries (not the
    TensorRT EP, which builds engines for minutes)."""
    bundle = source.kind == "bundle"
    return tuple(s.name for s in backend_specs() if s.runs(fmt) and (s.auto or not bundle))


def _is_reference_run(source: ModelSource, settings: CheckSettings, backend: str) -> bool:
    """A bare file on ONNX Runtime CPU when it is its own reference: nothing to compare."""
    if source.kind == "bundle" or backend != REFERENCE_BACKEND:
        return False
    ref = settings.reference_model
    return ref is None or ref.resolve() == source.path.resolve()


def _precision(source: ModelSource, cand: ModelFile, settings: CheckSettings) -> str:
    """The precision whose tolerances judge ``cand``: --tolerance, else its own, else fp32."""
    if source.kind != "bundle" and settings.tolerance is not None:
        return settings.tolerance
    return cand.precision or "fp32"


def _precision_warnings(source: ModelSource, settings: CheckSettings) -> list[str]:
    return [
        f"{c.label} does not say its precision (no .fp16./.int8. in an engine's name): judged "
        "with fp32 tolerances; give --tolerance fp16 or int8 if it was built for that"
        for c in source.candidates
        if c.precision is None and settings.tolerance is None
    ]


def _plan(source: ModelSource, settings: CheckSettings) -> list[Verdict | tuple[ModelFile, str]]:
    """In report order: a (candidate, backend) to run, or the verdict of one that cannot."""
    candidates = list(source.candidates)
    if settings.artifacts:
        assert source.manifest is not None  # _validate_for allows artifacts for bundles only
        names = [source.manifest.artifact(name).name for name in settings.artifacts]
        candidates = [c for c in candidates if c.label in names]
    plan: list[Verdict | tuple[ModelFile, str]] = []
    for cand in candidates:
        precision = _precision(source, cand, settings)
        wanted = settings.backends or _default_backends(source, cand.format)
        backends = [b for b in wanted if runs_format(b, cand.format)]
        if not backends:
            why = f"no selected backend runs {cand.format} files (selected: {list(wanted)})"
            plan.append(Verdict(cand.label, precision, "-", "skipped", reason=why))
        for backend in backends:
            reason = candidate_unavailable_reason(backend, cand)
            if reason is None and _is_reference_run(source, settings, backend):
                reason = (
                    "it computes the reference (this file on ONNX Runtime CPU); give "
                    "--reference-model OTHER.onnx to check this file on the CPU too"
                )
            if reason is None:
                plan.append((cand, backend))
            else:
                plan.append(Verdict(cand.label, precision, backend, "skipped", reason=reason))
    return plan


def _open(source: ModelSource, cand: ModelFile, backend: str, threads: int | None) -> Model:
    """``cand`` on ``backend`` and nothing else (or ``BackendUnavailable`` saying why); the
    precision tells a bare fp32 file from the same file run in bf16."""
    return load(
        source.path,
        backend=backend,
        precision=cand.precision,
        threads=threads,
        check_outputs=False,  # judged and reported per output instead
        artifact=cand.label,
        allow_failed=source.kind == "bundle",  # checking a failed artifact again is check's job
    )


def check_candidate(
    source: ModelSource, cand: ModelFile, backend: str, ref: Reference, settings: CheckSettings
) -> Verdict:
    """Run one candidate on one backend over the reference inputs and judge every output."""
    verdict = Verdict(cand.label, _precision(source, cand, settings), backend, "error")
    verdict.reference = ref.kind
    started = time.perf_counter()
    try:
        outputs, specs = _run_candidate(source, cand, backend, ref, settings.threads)
        _judge(verdict, source, ref, outputs, specs)
    except BackendUnavailable as exc:
        verdict.status, verdict.reason = "skipped", short_reason(str(exc))
    except EdgeportError as exc:
        verdict.reason = str(exc)
    verdict.seconds = time.perf_counter() - started
    return verdict


def _judge(
    verdict: Verdict,
    source: ModelSource,
    ref: Reference,
    outputs: dict[str, np.ndarray],
    specs: Sequence[TensorSpec],
) -> None:
    """Every output judged by its kind (a classifier's first output as logits, with labels)."""
    classifier = source.card is not None and source.card.task == "classification"
    kinds = {s.name: output_kind(s, classifier=classifier, index=i) for i, s in enumerate(specs)}
    try:
        verdict.outputs = judge(
            ref.outputs,
            outputs,
            precision=verdict.precision,
            kinds=kinds,
            labels=ref.labels if classifier else None,
            class_names=ref.class_names,
        )
    except EdgeportError as exc:
        raise InputError(f"cannot compare with the reference: {exc}") from exc
    verdict.status = "failed" if verdict.failures else "passed"
    verdict.count = ref.count


def _run_candidate(
    source: ModelSource, cand: ModelFile, backend: str, ref: Reference, threads: int | None
) -> tuple[dict[str, np.ndarray], tuple[TensorSpec, ...]]:
    """The candidate's outputs on the reference inputs, and its output specs."""
    try:
        model = _open(source, cand, backend, threads)
    except BackendUnavailable:
        raise
    except EdgeportError as exc:
        raise ModelLoadError(f"cannot load: {exc}") from exc
    with model:
        by_position = source.kind != "bundle" and _by_position(model, ref)
        batches = ref.batches
        if by_position:  # two files of one model, named by different converters
            batches = tuple(
                {s.name: array for s, array in zip(model.inputs, feeds.values(), strict=True)}
                for feeds in ref.batches
            )
        try:
            outputs = run_batches(model, batches, rechunk=ref.rechunk)
        except EdgeportError as exc:
            raise InputError(f"run failed: {exc}") from exc
        if not by_position:
            return outputs, model.outputs
        names = list(ref.outputs)
        specs = tuple(
            dataclasses.replace(s, name=n) for s, n in zip(model.outputs, names, strict=True)
        )
        return dict(zip(names, outputs.values(), strict=True)), specs


def _by_position(model: Model, ref: Reference) -> bool:
    """Whether a file's inputs and outputs are named otherwise than the reference's but are as
    many: then they are matched in order."""
    ins, outs = list(ref.batches[0]), list(ref.outputs)
    mine_in, mine_out = [s.name for s in model.inputs], [s.name for s in model.outputs]
    same_count = len(ins) == len(mine_in) and len(outs) == len(mine_out)
    return same_count and (ins != mine_in or outs != mine_out)


# --------------------------------------------------------------------------------------------
# The report


# (field, JSON type(s), meaning): the documented schema of ``CheckReport.to_dict()``.
CHECK_JSON_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("schema", ("string",), 'always "edgeport.check"'),
    (
        "schema_version",
        ("integer",),
        "3; bumped on any incompatible change (3: the model record bench and tune write too)",
    ),
    ("created", ("string",), "UTC time the check ended, ISO 8601"),
    ("passed", ("boolean",), "at least one run was compared and every compared run passed"),
    ("verdict", ("string",), "one line: passed, FAILED naming the runs, or nothing checked"),
    (
        "model",
        ("object",),
        MODEL_RECORD_FIELDS,
    ),
    (
        "reference",
        ("object", "null"),
        "kind (torch, stored, onnxruntime-cpu), description, dataset, split, count, batches, "
        'inputs {name: "dtype [shape]"}, accuracy, stored_vs_torch; null when nothing ran',
    ),
    ("settings", ("object",), "the resolved CheckSettings"),
    ("checks", ("array",), "one Verdict per (artifact or file, backend); below"),
    ("per_layer", ("object",), "--per-layer: per artifact, its per-layer report or {error}"),
    ("environment", ("object",), "machine, cpu, gpus, threads, packages (envinfo.py)"),
    ("warnings", ("array",), "run-level warnings (strings)"),
)
# Each element of ``checks`` (``compare.Verdict.to_dict()``).
CHECK_VERDICT_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("artifact", ("string",), "the bundle artifact's name, or the file's name"),
    ("precision", ("string",), "fp32, fp16, int8 or bf16: the tolerance row it is judged by"),
    ("backend", ("string",), 'the backend that ran it ("-" when none was selected)'),
    ("status", ("string",), "passed, failed, error (could not run or compare) or skipped"),
    ("passed", ("boolean", "null"), "null when it was not compared"),
    ("reason", ("string", "null"), "why it was skipped or what went wrong"),
    ("failures", ("array",), "why it fails, one sentence each, prefixed by the output's name"),
    ("count", ("integer",), "samples compared"),
    ("reference", ("string", "null"), "the reference's kind"),
    (
        "outputs",
        ("array",),
        "per output: name, kind (logits, tensor, exact), tolerance, comparison (max_abs, "
        "p99_abs, cosine_min, mismatched_elements, total_elements, ...; logits also top1/top5 "
        "agreement and accuracies), failures, worst (logits: the worst samples)",
    ),
    ("seconds", ("number",), "time to load, run and judge"),
)


@dataclass
class CheckReport:
    """Every (candidate, backend) verdict, the reference and the environment.

    ``to_dict()`` is described field by field in :data:`CHECK_JSON_FIELDS`.
    """

    model: dict[str, Any]
    reference: Reference | None
    checks: list[Verdict]
    settings: CheckSettings
    source: ModelSource
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    warnings: list[str] = field(default_factory=list)
    per_layer: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def checked(self) -> list[Verdict]:
        return [c for c in self.checks if c.status in ("passed", "failed", "error")]

    @property
    def failed(self) -> list[Verdict]:
        return [c for c in self.checks if c.status in ("failed", "error")]

    @property
    def skipped(self) -> list[Verdict]:
        return [c for c in self.checks if c.status in ("skipped", "not_run")]

    @property
    def passed(self) -> bool:
        """True when at least one run was compared and none failed."""
        return bool(self.checked) and not self.failed

    @property
    def verdict(self) -> str:
        if not self.checked:
            if self.source.kind == "bundle":
                return "nothing checked: no artifact of this bundle can run on this machine"
            return (
                f"nothing checked: no backend besides the reference can run "
                f"{self.source.path.name} on this machine"
            )
        if self.failed:
            names = ", ".join(f"{c.artifact} on {c.backend} ({c.status})" for c in self.failed)
            return f"FAILED: {names}"
        return f"passed: {len(self.checked)} run(s) within tolerance"

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CHECK_SCHEMA,
            "schema_version": CHECK_SCHEMA_VERSION,
            "created": self.created,
            "passed": self.passed,
            "verdict": self.verdict,
            "model": self.model,
            "reference": self.reference.to_dict() if self.reference else None,
            "settings": self.settings.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "per_layer": self.per_layer,
            "environment": self.environment,
            "warnings": list(self.warnings),
        }

    # -- what --per-layer needs (tools/per_layer.py; the command composes the two) ------------

    def layer_targets(self) -> list[tuple[str, str, Path]]:
        """(name, precision, path) of every fp16/int8 ONNX file that was compared, once each."""
        files = {c.label: c for c in self.source.candidates if c.format == "onnx"}
        out: dict[str, tuple[str, str, Path]] = {}
        for v in self.checks:
            cand = files.get(v.artifact)
            if cand is not None and v.passed is not None and v.precision in ("fp16", "int8"):
                out.setdefault(v.artifact, (v.artifact, v.precision, cand.path))
        return list(out.values())

    def layer_reference(self) -> Path:
        """The fp32 ONNX model whose layers the targets are compared with."""
        manifest = self.source.manifest
        if self.source.kind == "bundle" and manifest is not None:
            fp32 = [a for a in manifest.artifacts if a.format == "onnx" and a.precision == "fp32"]
            if not fp32:
                raise ModelLoadError("the bundle has no fp32 ONNX artifact to compare layers with")
            return verify_artifact(self.source.path, fp32[0])
        ref = self.settings.reference_model
        if ref is None or ref.resolve() == self.source.path.resolve():
            raise ConfigError("--per-layer needs the fp32 ONNX model: give --reference-model")
        return ref

    def layer_feeds(self, samples: int, chunk: int) -> list[dict[str, np.ndarray]]:
        """Up to ``samples`` samples of the reference inputs, as feeds of at most ``chunk``."""
        if self.reference is None:
            return []
        if not self.reference.rechunk:
            feeds, total = [], 0
            for batch in self.reference.batches:
                if total >= samples:
                    break
                feeds.append(batch)
                total += sample_count(batch)
            return feeds
        (everything,) = self.reference.batches
        count = min(samples, sample_count(everything))
        return [
            {k: v[start : min(start + chunk, count)] for k, v in everything.items()}
            for start in range(0, count, chunk)
        ]


def check(
    model: str | Path,
    settings: CheckSettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    **overrides: Any,
) -> CheckReport:
    """Check ``model`` (bundle, .onnx or engine) against its reference (module docstring).
    ``overrides`` set :class:`CheckSettings` fields by name (``check(path, data="digits")``)."""
    from edgeport.runtime.envinfo import collect_environment

    settings = make_settings(settings, overrides)
    say = progress or (lambda msg: log.info("%s", msg))
    source = resolve_source(model)
    if source.kind == "onnx" and settings.tolerance == "bf16":  # the file run in bf16
        bf16 = with_bf16(source)
        source = replace(source, candidates=[c for c in bf16.candidates if c.precision == "bf16"])
    _validate_for(source, settings)
    plan = _plan(source, settings)
    warnings = _precision_warnings(source, settings)
    ref = None
    if any(not isinstance(step, Verdict) for step in plan):
        make = _bundle_reference if source.kind == "bundle" else _file_reference
        ref = make(source, settings, warnings)
        say(f"reference: {ref.description} ({ref.count} samples)")
    checks = []
    for step in plan:
        if isinstance(step, Verdict):
            log.debug("skip %s: %s", step.artifact, step.reason)  # listed in the report
            checks.append(step)
            continue
        assert ref is not None  # built above whenever a step runs
        say(f"checking {step[0].label} on {step[1]}")
        verdict = check_candidate(source, *step, ref, settings)
        say(f"  {verdict.message()}")
        checks.append(verdict)
    return CheckReport(
        model=model_record(source),
        reference=ref,
        checks=checks,
        settings=settings,
        source=source,
        environment=collect_environment(threads=settings.threads),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        warnings=warnings,
    )
