"""``load`` a bundle, ONNX file, TensorRT engine, OpenVINO IR, ExecuTorch or LiteRT file;
``Model.infer`` any inputs; ``Model.run`` and ``Model.predict`` for image classifiers.

``load`` resolves the path (bundle directory, ``.onnx``, ``.engine``/``.plan``, ``.xml``,
``.pte``, ``.tflite``), lists what could run it, lets :mod:`edgeport.runtime.backends.registry`
order the candidates (and refuse what may not run), reads the chosen file (and the other files
it needs, such as an IR's weights) once, verifies those bytes (sizes and sha256 against the
manifest, external data inside the model's directory) and opens the engine on the same bytes
(:mod:`edgeport.runtime.source`). The file's inputs and outputs are checked against what the
manifest and the model card declare, and ``Model`` validates every feed before the backend
sees it (:mod:`specs`).

Input policy: numpy arrays of exactly the dtypes the model declares; nothing is converted
silently, and the error says which cast is needed. ``Model.run`` is the image-classifier
convenience (one float32 NCHW batch in, the one output out as float32), and the only place an
fp16 model's input is converted from float32, as an image batch always is float32.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend
from edgeport.runtime.backends.cuda import parse_device
from edgeport.runtime.backends.onnx_proto import OnnxSummary, read_onnx_summary
from edgeport.runtime.backends.registry import (
    Attempt,
    ModelFile,
    Request,
    check_backend_name,
    parity_failed_text,
    record_refusal,
    rule_text,
    steps,
)
from edgeport.runtime.bundle import (
    MANIFEST_NAME,
    PRECISIONS,
    Artifact,
    BatchRange,
    Manifest,
    leading_range,
    resolve_inside,
)
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.chunks import run_in_chunks
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    InputError,
    ModelLoadError,
    NonFiniteOutputWarning,
    ParityError,
)
from edgeport.runtime.preprocess import ImageLike, preprocess
from edgeport.runtime.source import ModelBytes, read_model_bytes
from edgeport.runtime.specs import (
    DTYPES,
    FeedCheck,
    TensorSpec,
    merge_specs,
    nonfinite_outputs,
    plain_array,
    range_text,
)
from edgeport.runtime.tasks import Detections, detections, label_maps, prepare_images

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan")
# bare files of the formats besides ONNX and engines, by suffix: their ModelSource kind
FILE_FORMATS = {".xml": "openvino", ".pte": "executorch", ".tflite": "litert"}
_PRECISION_IN_NAME = re.compile(r"\.(fp32|fp16|int8)\.")
PRECISION_METADATA_KEY = "edgeport.precision"
_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)


@dataclass(frozen=True)
class Prediction:
    """The top-k classes for one image, most probable first."""

    labels: list[str]
    indices: list[int]
    probabilities: list[float]

    @property
    def top1(self) -> str:
        """The most probable class name."""
        return self.labels[0]

    @property
    def confidence(self) -> float:
        """The probability of :attr:`top1`."""
        return self.probabilities[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "indices": list(self.indices),
            "probabilities": list(self.probabilities),
        }


@dataclass(frozen=True)
class ModelSource:
    """What a path holds: its kind, model card and the files some backend might run."""

    kind: str  # "bundle", "onnx", "engine", or a FILE_FORMATS format
    path: Path
    card: ModelCard | None
    candidates: list[ModelFile]
    manifest: Manifest | None = None
    summary: OnnxSummary | None = None  # the parsed file, for a bare .onnx (its one candidate)
    manifest_sha256: str | None = None  # of the manifest bytes that were parsed
    read: ModelBytes | None = None  # a bare .onnx as read once (resolve_source(read_bytes=True))


def load(
    path: str | Path,
    backend: str = "auto",
    precision: str | None = None,
    device: str | int | None = None,
    *,
    threads: int | None = None,
    cuda_graph: bool = False,
    verify: bool = True,
    check_outputs: bool = True,
    backend_options: Mapping[str, Any] | None = None,
    expected_batch: int = 1,
    artifact: str | None = None,
    allow_failed: bool = False,
) -> Model:
    """Open a model for inference on the best backend this machine has (or the one asked for).

    ``path``: a bundle directory, an ``.onnx`` file, an ``.engine``/``.plan`` file, an OpenVINO
    IR ``.xml`` (its ``.bin`` beside it), an ExecuTorch ``.pte`` or a LiteRT ``.tflite``.
    ``backend``: "auto" or one of ``registry.BACKENDS`` ("tensorrt", "onnxruntime-cuda",
    "onnxruntime-tensorrt", "onnxruntime-cpu", "openvino", "litert", "executorch").
    ``precision``: None (automatic, see ``registry.PRECISION_RULE``) or one of
    fp32/fp16/int8/bf16 (bf16: a bundle's bf16 artifact, or a bare fp32 ONNX file run with bf16
    arithmetic, on OpenVINO where the CPU has it). ``device``: None (any), "cpu", "cuda",
    "cuda:N" or N. ``threads``: ONNX Runtime intra-op threads (None: its default).
    ``cuda_graph``: replay a captured CUDA graph (GPU backends; fixed shapes). ``verify``: check
    the artifact's sha256 against the manifest.
    ``check_outputs``: warn (:class:`NonFiniteOutputWarning`) when an output holds NaN or Inf.
    ``backend_options``: settings of one backend, e.g. OpenVINO's ``hint``, ``streams``,
    ``cache_dir`` (see each backend's module). ``expected_batch``: the batch size ``auto``
    picks for when this machine's tuning record (``edgeport tune``) holds. ``artifact``: the
    name of the one bundle artifact to open (e.g. "litert-int8"), as ``edgeport inspect`` lists.
    ``allow_failed``: run an artifact whose export parity check failed when it is asked for by
    precision, name or path (``auto`` never runs one, and a file that does not match its sha256
    never runs).
    """
    options = LoadOptions.checked(
        backend=backend,
        precision=precision,
        device=device,
        threads=threads,
        cuda_graph=cuda_graph,
        verify=verify,
        check_outputs=check_outputs,
        backend_options=dict(backend_options or {}),
        expected_batch=expected_batch,
    )
    source = resolve_source(path, read_bytes=True)
    if artifact is not None:
        source = _only(source, artifact)
    if precision == "bf16":
        source = with_bf16(source)
    if precision is not None and not any(c.precision == precision for c in source.candidates):
        have = sorted({c.precision or "unknown precision" for c in source.candidates})
        what = "bundle" if source.kind == "bundle" else "file"
        raise ConfigError(
            f"{source.path}: no {precision} artifact in this {what} (it has {', '.join(have)})"
        )
    explicit = precision is not None or artifact is not None or source.kind != "bundle"
    request = Request(explicit=explicit, allow_failed=allow_failed)
    _refuse_failed(source, precision, request)
    return _open_first(source, options, request)


def _refuse_failed(source: ModelSource, precision: str | None, request: Request) -> None:
    """An explicit request whose every artifact failed its export parity check is refused
    (``ParityError``) unless the caller opted in."""
    if not request.explicit or request.allow_failed:
        return
    asked = [c for c in source.candidates if precision is None or c.precision == precision]
    if asked and all(c.parity_passed is False for c in asked):
        names = ", ".join(c.label for c in asked)
        raise ParityError(
            f"{source.path}: {names}: {parity_failed_text(asked[0])}. edgeport does not run an "
            f"artifact whose export parity check failed unless asked to: load(..., "
            "allow_failed=True) or --allow-failed; or re-export it"
        )


def _only(source: ModelSource, artifact: str) -> ModelSource:
    mine = [c for c in source.candidates if c.label == artifact]
    if not mine:
        names = [c.label for c in source.candidates]
        raise ConfigError(f"{source.path}: no artifact named {artifact!r}; it has {names}")
    return replace(source, candidates=mine)


@dataclass(frozen=True)
class LoadOptions:
    """``load``'s arguments, checked."""

    backend: str
    precision: str | None
    device: str | int | None
    device_kind: str | None
    device_index: int
    threads: int | None
    cuda_graph: bool
    verify: bool
    check_outputs: bool
    backend_options: dict[str, Any]
    expected_batch: int

    @classmethod
    def checked(cls, *, device: str | int | None, **values: Any) -> LoadOptions:
        backend, precision, threads = values["backend"], values["precision"], values["threads"]
        check_backend_name(backend)
        if values["backend_options"] and backend not in ("auto", "openvino"):
            raise ConfigError(f"backend_options are taken by openvino only, not by {backend}")
        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {precision!r}; expected None or one of {PRECISIONS}"
            )
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
        device_kind, device_index = parse_device(device)
        return cls(device=device, device_kind=device_kind, device_index=device_index, **values)


def _open_first(source: ModelSource, options: LoadOptions, request: Request) -> Model:
    """Open the first candidate, in the registry's order, that opens; explain the rest. Each
    file is read (and verified) once, however many backends try it; one that does not match its
    manifest, or cannot be read as a model, is never run: its error is raised."""
    attempts: list[Attempt] = []
    prefer, record_text = _tuned_choice(source, options)
    files = {c.label: source.read for c in source.candidates} if source.read else {}
    for step in steps(
        source.candidates,
        backend=options.backend,
        precision=options.precision,
        device_kind=options.device_kind,
        device_index=options.device_index,
        prefer=prefer,
        request=request,
    ):
        if isinstance(step, Attempt):
            attempts.append(step)
            continue
        name, cand = step
        if cand.label not in files:
            files[cand.label] = read_model_bytes(cand, verify=options.verify)
        try:
            opened = _open(name, cand, files[cand.label], source.card, options)
        except BackendUnavailable as exc:
            attempts.append(Attempt(name, cand.label, cand.precision, "failed", str(exc)))
            log.debug("%s could not open %s: %s", name, cand.label, exc)
            continue
        note = ""
        if cand.parity_passed is False:  # asked for by name, with allow_failed
            note = parity_failed_text(cand)
            log.warning("%s: running %s although %s", source.path, cand.label, note)
        attempts.append(Attempt(name, cand.label, cand.precision, "chosen", note))
        model = _make_model(opened, name, cand, source, attempts, options)
        model.choice_basis = _basis(record_text, prefer, (name, cand.label), attempts)
        log.debug("loaded %s: %s on %s", source.path, cand.label, name)
        return model
    lines = "\n".join(f"  - {a}" for a in attempts) or "  (no candidates)"
    raise BackendUnavailable(
        f"no backend can run {source.path} here (backend={options.backend!r}, "
        f"precision={options.precision!r}, device={options.device!r}):\n{lines}"
    )


def _tuned_choice(source: ModelSource, options: LoadOptions) -> tuple[tuple[str, str] | None, str]:
    """The (backend, artifact) a tuning record names fastest here, and what to say about it."""
    backend, precision = options.backend, options.precision
    if backend != "auto" or precision is not None:
        return None, f"asked for backend={backend!r}, precision={precision!r}"
    if source.kind != "bundle":
        return None, f"{rule_text()} (a bare file has no tuning record)"
    from edgeport.runtime.tuning_records import effective_settings, find_record

    settings = effective_settings(options.threads, options.cuda_graph, options.backend_options)
    record, why = find_record(source.path, settings, source.manifest_sha256)
    entry = record.winner_for(options.expected_batch) if record is not None else None
    if entry is None:
        return None, f"{why}; {rule_text()}"
    best = entry.winner
    others = ", ".join(
        f"{t.backend} {t.precision} {t.p50_ms:.3g} ms" for t in entry.timings if t != best
    )
    numbers = f"({best.p50_ms:.3g} ms p50; {others or 'nothing else measured'})"
    prefer = (best.backend, best.artifact)
    refusal = record_refusal(source.candidates, prefer, options.device_index)
    if refusal is not None:  # the record's word only: it may name what does not exist
        return None, (
            f"{why}: at batch {entry.batch} it names {best.backend} [{best.artifact}] "
            f"{numbers}; not obeyed: {refusal}; {rule_text()}"
        )
    return prefer, (
        f"{why}: at batch {entry.batch} the fastest was {best.backend} {best.precision} {numbers}"
    )


def _basis(
    record_text: str,
    prefer: tuple[str, str] | None,
    chosen: tuple[str, str],
    attempts: list[Attempt],
) -> str:
    """What decided the choice: the record (obeyed, or why it could not be) or the rule."""
    if prefer is None or chosen == prefer:
        return record_text
    why = next(a.why for a in attempts if (a.backend, a.target) == prefer)  # tried first
    return f"{record_text}; not obeyed: it did not open ({why}); {rule_text()}"


# -- resolving the path -------------------------------------------------------------------------


def resolve_source(path: str | Path, *, read_bytes: bool = False) -> ModelSource:
    """Read what ``path`` holds (manifest, ONNX metadata) without opening any backend; with
    ``read_bytes`` a bare ONNX file is read whole once (``ModelSource.read``), for ``load``."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(
            f"no such file or directory: {path}; expected a bundle directory, an .onnx file or "
            "an .engine/.plan file"
        )
    if path.is_dir():
        manifest, digest = Manifest.read(path)
        return ModelSource(
            "bundle",
            path,
            manifest.card,
            [_bundle_candidate(path, art) for art in manifest.artifacts],
            manifest,
            manifest_sha256=digest,
        )
    suffix = path.suffix.lower()
    if suffix not in (".onnx", *ENGINE_SUFFIXES, *FILE_FORMATS):
        raise ModelLoadError(
            f"{path} is not a model edgeport can load: expected a bundle directory (with "
            f"{MANIFEST_NAME}), an .onnx, .engine/.plan, OpenVINO .xml, ExecuTorch .pte or "
            f"LiteRT .tflite file, got {suffix or 'no suffix'}"
        )
    kind = "onnx" if suffix == ".onnx" else FILE_FORMATS.get(suffix, "engine")
    sibling, artifacts = _sibling_manifest(path)
    if sibling is not None and artifacts:
        return ModelSource(
            kind,
            path,
            sibling.card,
            [_bundle_candidate(path.parent, art) for art in artifacts],
            sibling,
        )
    if suffix == ".onnx":
        read = None
        if read_bytes:  # for load: parse the bytes the engine will open, read once
            read = read_model_bytes(ModelFile("onnx", None, path, path.name), verify=False)
            summary = read.summary
            assert summary is not None  # read_model_bytes parses every ONNX file
        else:  # a memory map: large weights are never read
            summary = read_onnx_summary(path)
        card = _card_from_metadata(path, summary)
        precision = summary.metadata.get(PRECISION_METADATA_KEY) or summary.guess_precision()
        cand = ModelFile("onnx", precision, path, path.name)
        return ModelSource("onnx", path, card, [cand], summary=summary, read=read)
    if kind == "engine":
        _check_engine_file(path)
    match = _PRECISION_IN_NAME.search(path.name)
    fmt = "tensorrt" if kind == "engine" else kind
    cand = ModelFile(fmt, match.group(1) if match else None, path, path.name)
    return ModelSource(kind, path, None, [cand])


def with_bf16(source: ModelSource) -> ModelSource:
    """A bare fp32 ONNX file also as a bf16 candidate: the same file, run with bf16 arithmetic
    by the engines that have it. Only asked for by name (``precision="bf16"``, ``check
    --tolerance bf16``, ``bench --precision bf16``): a bare file's bf16 run has no parity check
    behind it. A bundle lists its bf16 artifact itself."""
    if source.kind != "onnx" or source.manifest is not None:
        return source
    extra = [replace(c, precision="bf16") for c in source.candidates if c.precision == "fp32"]
    return replace(source, candidates=[*source.candidates, *extra])


def _check_engine_file(path: Path) -> None:
    """A bare engine has no sha256 to check: ask the TensorRT library, when one is installed
    and can tell without a GPU, whether the file is a well-formed plan."""
    from edgeport.runtime.backends.tensorrt import check_plan

    try:
        verdict = check_plan(path)  # reads the file first: missing or empty is a ModelLoadError
    except BackendUnavailable:
        return  # no TensorRT here: nothing can run it anyway, and load will say so
    if verdict.malformed:
        raise ModelLoadError(
            f"the TensorRT library reports the engine {path} as malformed ({verdict}): it is "
            "truncated, corrupt or not a plan; rebuild or copy it again"
        )


def _bundle_candidate(bundle_dir: Path, art: Artifact) -> ModelFile:
    return ModelFile(
        art.format,
        art.precision,
        bundle_dir / art.path,
        art.name,
        artifact=art,
        engine=art.engine,
        bundle_dir=bundle_dir,
    )


def _sibling_manifest(path: Path) -> tuple[Manifest | None, list[Artifact]]:
    """The manifest next to a single file, and its entries for that file (the fp32 file is
    also the bf16 artifact), when there is one."""
    if not (path.parent / MANIFEST_NAME).is_file():
        return None, []
    manifest = Manifest.load(path.parent)
    target = path.resolve()
    found = []
    for art in manifest.artifacts:
        try:
            if resolve_inside(path.parent, art.path) == target:
                found.append(art)
        except ModelLoadError:
            continue  # an entry leaving the bundle is not this file; verify refuses it later
    return manifest, found


def _card_from_metadata(path: Path, summary: OnnxSummary) -> ModelCard | None:
    text = summary.metadata.get(ONNX_METADATA_KEY)
    if text is None:
        log.debug(
            "%s has no %r metadata: Model.run works, Model.predict needs a model card",
            path,
            ONNX_METADATA_KEY,
        )
        return None
    try:
        return ModelCard.from_json(text)
    except InputError as exc:
        raise ModelLoadError(f"{path}: the embedded model card is invalid: {exc}") from exc


# -- opening -------------------------------------------------------------------------------------


def _open(
    name: str, cand: ModelFile, model: ModelBytes, card: ModelCard | None, options: LoadOptions
) -> Backend:
    """Open the bytes that were read (and verified) on backend ``name``."""
    device_index, threads, cuda_graph = options.device_index, options.threads, options.cuda_graph
    if name == "tensorrt":
        from edgeport.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(
            model.path,
            cand.engine,
            device_index=device_index,
            cuda_graph=cuda_graph,
            data=model.data,
        )
    if cand.format != "onnx":
        return _open_native(name, cand, model, card, options)
    summary = model.summary
    assert summary is not None  # read_model_bytes parses every ONNX file
    if name == "openvino":
        from edgeport.runtime.backends.openvino import OpenVinoBackend, OpenVinoSettings

        file_specs = [
            TensorSpec(t.name, t.elem_type, t.shape)
            for t in (*summary.inputs, *summary.outputs)
            if t.elem_type in DTYPES
        ]
        ov_settings = OpenVinoSettings.from_options(
            threads, options.backend_options, precision=cand.precision or "fp32"
        )
        return OpenVinoBackend(model, ov_settings, file_specs)
    from edgeport.runtime.backends.onnxrt import (
        OnnxRuntimeBackend,
        OrtSettings,
        tensorrt_profile_options,
    )

    profile = None
    if name == "onnxruntime-tensorrt" and cand.artifact is not None:
        profile = tensorrt_profile_options(cand.artifact.inputs)
    settings = OrtSettings(
        threads=threads,
        device_index=device_index,
        cuda_graph=cuda_graph and name != "onnxruntime-cpu",
        precision=cand.precision or "fp32",
        tensorrt_profile=profile,
    )
    return OnnxRuntimeBackend(model, name, settings)


def _open_native(
    name: str, cand: ModelFile, model: ModelBytes, card: ModelCard | None, options: LoadOptions
) -> Backend:
    """An OpenVINO IR, ExecuTorch or LiteRT file's bytes; names from the manifest or card."""
    declared = cand.artifact or (card if card and card.inputs else None)
    inputs = [s.name for s in declared.inputs] if declared else []
    outputs = [s.name for s in declared.outputs] if declared else []
    if name == "litert":
        from edgeport.runtime.backends.litert import LiteRtBackend

        return LiteRtBackend(
            model, threads=options.threads, input_names=inputs, output_names=outputs
        )
    if name == "executorch":
        from edgeport.runtime.backends.executorch import ExecuTorchBackend

        return ExecuTorchBackend(
            model, threads=options.threads, input_names=inputs, output_names=outputs
        )
    from edgeport.runtime.backends.openvino import OpenVinoBackend, OpenVinoSettings

    settings = OpenVinoSettings.from_options(options.threads, options.backend_options)
    return OpenVinoBackend(model, settings)


def open_artifact(
    path: Path,
    artifact: Artifact,
    card: ModelCard | None,
    backend: str,
    *,
    threads: int | None = None,
) -> Model:
    """Open one file as ``artifact`` (a manifest entry not written yet) describes it, on
    ``backend``: what export's parity gate runs before the manifest exists. ``path`` is where
    ``artifact.path`` lies; its files are read once and checked against the entry, so the
    verdict is on the bytes the manifest records."""
    root = path.parents[len(Path(artifact.path).parts) - 1]
    if root / artifact.path != path:
        raise ConfigError(f"{path} is not where artifact {artifact.name!r} lies ({artifact.path})")
    cand = _bundle_candidate(root, artifact)
    options = LoadOptions.checked(
        backend=backend,
        precision=artifact.precision,
        device=None,
        threads=threads,
        cuda_graph=False,
        verify=True,
        check_outputs=False,
        backend_options={},
        expected_batch=1,
    )
    source = ModelSource(artifact.format, path, card, [cand])
    return _open_first(source, options, Request(explicit=True))


def _make_model(
    opened: Backend,
    name: str,
    cand: ModelFile,
    source: ModelSource,
    attempts: list[Attempt],
    options: LoadOptions,
) -> Model:
    try:
        inputs, outputs = _agree(opened, cand, source.card)
    except BaseException:
        opened.close()
        raise
    notes = []
    if options.cuda_graph and name == "onnxruntime-cpu":
        notes.append("cuda_graph=True has no effect on onnxruntime-cpu")
    if options.threads is not None and name == "tensorrt":
        notes.append("threads applies to ONNX Runtime only; TensorRT ignores it")
    return Model(
        opened,
        path=source.path,
        card=source.card,
        artifact=cand.artifact,
        precision=cand.precision or "unknown",
        inputs=inputs,
        outputs=outputs,
        attempts=attempts,
        notes=notes,
        check_outputs=options.check_outputs,
    )


def _agree(
    opened: Backend, cand: ModelFile, card: ModelCard | None
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Check that the file, the manifest and the card describe the same model; return the
    file's inputs and outputs with the declared symbolic names, ranges and value ranges."""
    where = f"{cand.path} ({cand.label})"
    inputs, outputs = opened.inputs, opened.outputs
    declared = cand.artifact or (card if card is not None and card.inputs else None)
    if declared is not None:
        inputs = merge_specs(inputs, declared.inputs, where, "inputs")
        if declared.outputs:
            outputs = merge_specs(outputs, declared.outputs, where, "outputs")
    if card is not None and card.is_image_model:
        _agree_image(where, inputs, card)
    if card is not None and card.task == "classification" and card.num_classes:
        shape = outputs[0].shape
        classes = shape[1] if len(shape) == 2 else None
        if isinstance(classes, int) and classes != card.num_classes:
            raise ModelLoadError(
                f"{where}: the file outputs {classes} classes, the model card lists "
                f"{card.num_classes}; re-export the model"
            )
    return inputs, outputs


def _agree_image(where: str, inputs: Sequence[TensorSpec], card: ModelCard) -> None:
    name = card.image_input_name or inputs[0].name
    spec = next((s for s in inputs if s.name == name), None)
    if spec is None:
        raise ModelLoadError(
            f"{where}: the model card feeds images to input {name!r}, which the file does not "
            f"have (inputs {[s.name for s in inputs]}); re-export the model"
        )
    if spec.rank != 4:
        raise ModelLoadError(
            f"{where}: input {spec.name} has shape {list(spec.shape)}; an image model needs NCHW"
        )
    for have, want, axis in zip(
        spec.shape[1:], card.input_shape, ("channels", "height", "width"), strict=True
    ):
        if isinstance(have, int) and have != want:
            raise ModelLoadError(
                f"{where}: the file's input has {axis} {have}, the model card says {want} "
                f"(file shape {list(spec.shape)}, card input {card.input_shape}); re-export the "
                "model"
            )


# -- the model ---------------------------------------------------------------------------------


class _ImageFeedCheck(FeedCheck):
    """The feed check of a model whose one input is an NCHW image batch: the same checks, with
    messages in the terms of images (batch, channels, height x width)."""

    def _expected(self) -> str:
        dims = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.specs[0].shape[1:])
        return f"(N, C, H, W) = (N, {dims})"

    def _raise_array(self, check: Any, array: Any) -> None:
        spec = check.spec
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"Model.run expects a numpy {spec.dtype} array of shape {self._expected()}, got "
                f"{type(array).__name__}; raw images go through Model.predict"
            )
        if array.dtype != check.dtype:
            raise InputError(
                f"input {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype} (shape "
                f"{array.shape}); Model.run does not convert: use batch.astype(np.{spec.dtype}), "
                "or give raw images to Model.predict"
            )
        hint = "; add a batch axis with batch[None]" if array.ndim == 3 else ""
        raise InputError(
            f"input {spec.name!r}: expected a 4-D batch {self._expected()}, got {array.ndim}-D "
            f"shape {array.shape}{hint}"
        )

    def _raise_dim(self, check: Any, array: np.ndarray, axis: int, low: int, high: int) -> None:
        name, shape = check.spec.name, array.shape
        if axis == 0:
            raise InputError(
                f"input {name!r}: batch size {shape[0]} is outside this model's range "
                f"{range_text(low, high)} (shape {shape}); "
                + ("split the batch" if shape[0] > high else "pad the batch")
            )
        if axis == 1:
            raise InputError(
                f"input {name!r}: expected {low} channels (axis 1 of {self._expected()}), got "
                f"{shape[1]} in shape {shape}"
            )
        height, width = (check.spec.shape[2], check.spec.shape[3])
        raise InputError(
            f"input {name!r}: expected height x width {height}x{width}, got {shape[2]}x{shape[3]} "
            f"(shape {shape}); resize to the card's input size (Model.predict does)"
        )


def _feed_check(inputs: Sequence[TensorSpec]) -> FeedCheck:
    image_like = len(inputs) == 1 and inputs[0].rank == 4 and inputs[0].is_float
    return (_ImageFeedCheck if image_like else FeedCheck)(inputs)


class Model:
    """An opened model: ``infer`` (named arrays in, named arrays out) for any model, ``run``
    (one array in, one out) and ``predict`` (images in, labels out) for image classifiers.
    Safe to call from several threads at once. Close it (or use ``with``) to free GPU memory."""

    def __init__(
        self,
        backend: Backend,
        *,
        path: Path,
        card: ModelCard | None,
        artifact: Artifact | None,
        precision: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        attempts: list[Attempt],
        notes: list[str] | None = None,
        check_outputs: bool = True,
    ) -> None:
        self._backend: Backend | None = backend
        self._backend_name = backend.name
        self._describe = backend.describe()
        self.path = path
        self.card = card
        self.artifact = artifact
        self.precision = precision
        self.inputs = inputs
        self.outputs = outputs
        self.attempts = list(attempts)
        self.notes = list(notes or [])
        self._feeds = _feed_check(inputs)
        self._output_names = tuple(s.name for s in outputs)
        self._one_input = self._feeds._checks[0] if len(inputs) == 1 else None  # infer's fast path
        # Model.run: one input and one output; float32 in and out, even for an fp16 file
        self._single = self._one_input if len(outputs) == 1 else None
        self._run_in_f16 = len(inputs) == 1 and inputs[0].dtype == "float16"
        self._run_out_f16 = len(outputs) == 1 and outputs[0].dtype == "float16"
        self.check_outputs = check_outputs  # warn on NaN/Inf outputs
        self.choice_basis = ""  # what decided the backend: a tuning record, or the rule

    # -- properties -----------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """The backend running the model: tensorrt, onnxruntime-cuda, onnxruntime-cpu, ..."""
        return self._backend_name

    @property
    def closed(self) -> bool:
        return self._backend is None

    @property
    def num_classes(self) -> int | None:
        return self.card.num_classes if self.card and self.card.num_classes else None

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The first input's shape without its leading (batch) axis; None where dynamic."""
        return tuple(d if isinstance(d, int) else None for d in self.inputs[0].shape[1:])

    @property
    def batch_range(self) -> BatchRange:
        """The range of the first input's leading (batch) axis."""
        return leading_range(self.inputs[0])

    # -- running --------------------------------------------------------------------------------

    def _live(self) -> Backend:
        backend = self._backend
        if backend is None:
            raise ModelLoadError(f"this model ({self.path}) is closed; load it again")
        return backend

    def infer(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """The outputs by name (in the model's order) for inputs given by name. A model with
        one input also takes the array itself. Every input is validated first (:mod:`specs`)."""
        backend = self._live()
        one = self._one_input
        if one is not None and isinstance(feeds, np.ndarray):  # np.memmap and other subclasses
            arrays = [self._feeds.one(one, feeds)]
        elif one is not None and type(feeds) is dict and len(feeds) == 1 and one.name in feeds:
            arrays = [self._feeds.one(one, feeds[one.name])]  # the common case, checked alike
        else:
            arrays = self._feeds(feeds)  # type: ignore[arg-type]
        outputs = backend.infer(arrays)
        if self.check_outputs:
            self._warn_nonfinite(outputs)
        return dict(zip(self._output_names, outputs, strict=True))

    def validate(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs checked exactly as :meth:`infer` checks them (raising ``InputError``),
        without running the model: for callers that gather inputs before one call, such as
        ``edgeport serve``'s dynamic batching."""
        arrays = self._feeds(feeds)
        return dict(zip((s.name for s in self.inputs), arrays, strict=True))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The one output (float32) for the one input: for an image classifier, logits of shape
        (N, classes) for a preprocessed float32 (N, C, H, W) batch."""
        backend = self._live()
        check = self._single
        if check is None:
            raise InputError(
                f"Model.run takes models with one input and one output; {self.path.name} has "
                f"inputs {[s.name for s in self.inputs]} and outputs "
                f"{list(self._output_names)}: use Model.infer"
            )
        if self._run_in_f16 and isinstance(batch, np.ndarray) and batch.dtype == _F32:
            batch = plain_array(batch).astype(_F16)
        outputs = backend.infer([self._feeds.one(check, batch)])
        if self.check_outputs:
            self._warn_nonfinite(outputs)
        return outputs[0].astype(_F32) if self._run_out_f16 else outputs[0]

    def _warn_nonfinite(self, outputs: Sequence[np.ndarray]) -> None:
        found = nonfinite_outputs(self._output_names, outputs)
        if found:
            warnings.warn(
                f"{self.path.name} ({self.backend}, {self.precision}) returned non-finite "
                f"values from finite inputs: {'; '.join(found)}. An fp16 artifact may overflow; "
                "check it with edgeport check (load(..., check_outputs=False) silences this)",
                NonFiniteOutputWarning,
                stacklevel=3,
            )

    def predict(
        self, images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike], top_k: int = 5
    ) -> list[Prediction]:
        """Class names and probabilities for raw images (paths, PIL images, uint8 HWC arrays;
        grey, RGB or RGBA), resized and normalised as the model card says."""
        card = self._image_card("predict")
        if card.task != "classification":
            raise ConfigError(
                f"{self.path} is a {card.task} model; Model.predict classifies images"
                + (": use Model.detect" if card.task == "detection" else "")
                + (": use Model.segment" if card.task == "segmentation" else "")
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        logits = self.run_images(preprocess(images, card))[0]
        shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probabilities = exp / exp.sum(axis=1, keepdims=True)
        k = min(top_k, probabilities.shape[1])
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [
            Prediction(
                labels=[card.class_names[i] for i in row],
                indices=[int(i) for i in row],
                probabilities=[float(p) for p in probs[row]],
            )
            for row, probs in zip(order, probabilities, strict=True)
        ]

    def _image_card(self, what: str) -> ModelCard:
        card = self.card
        if card is None or not card.is_image_model:
            raise ModelLoadError(
                f"{self.path} has no model card for images (no bundle manifest and no "
                f"{ONNX_METADATA_KEY!r} ONNX metadata), so {what} cannot preprocess images or "
                "name classes; use Model.run or Model.infer on preprocessed arrays, or load the "
                "bundle"
            )
        if len(self.inputs) != 1:
            raise ConfigError(
                f"Model.{what} feeds images to models with one input; {self.path.name} has "
                f"{[s.name for s in self.inputs]}: use Model.infer"
            )
        return card

    def run_images(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output for any number of preprocessed images: split above the batch range's
        max, padded below its min."""
        feeds = {self.inputs[0].name: batch.astype(self.inputs[0].dtype, copy=False)}
        low, high = self.batch_range.min, self.batch_range.max
        return list(run_in_chunks(self.infer, feeds, high, low).values())

    # -- description and lifetime ---------------------------------------------------------------

    def explain(self) -> str:
        """Which backend and artifact were chosen, with what settings, and why the others not,
        and the CPU's precision capabilities (its flags and OpenVINO's reading)."""
        from edgeport.runtime.cpu_features import describe_line

        target = self.artifact.name if self.artifact else self.path.name
        lines = [
            f"model: {self.path}",
            f"chosen: {self.backend}, {target} ({self.precision})",
        ]
        lines += [f"  {key}: {value}" for key, value in self.describe().items()]
        lines += [f"input {spec.describe()}" for spec in self.inputs]
        lines += [f"output {spec.describe()}" for spec in self.outputs]
        lines.append("candidates, in the order considered:")
        lines += [f"  - {a}" for a in self.attempts]
        lines.append(f"choice: {self.choice_basis or rule_text()}")
        lines.append(f"cpu precisions: {describe_line()}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        """The backend's settings (library, providers, threads, device, CUDA graph)."""
        backend = self._backend
        if backend is not None:
            self._describe = backend.describe()  # live: e.g. a CUDA graph that was given up
        return dict(self._describe)

    def close(self) -> None:
        """Free the session or engine and its GPU memory; later calls raise. Idempotent."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        target = self.artifact.name if self.artifact else self.path.name
        return f"<Model {target} on {self.backend} ({self.precision}), {state}>"

    # -- task helpers (numpy post-processing, :mod:`edgeport.runtime.tasks`) -------------------

    def detect(
        self,
        images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike],
        *,
        score_threshold: float | None = None,
    ) -> list[Detections]:
        """Objects in raw images (paths, PIL images, uint8 HWC arrays): per image boxes in its
        own pixels, scores, labels and class names, with the card's SSD post-processing
        (``score_threshold`` replaces its score threshold)."""
        card = self._image_card("detect")
        batch, sizes = prepare_images(images, card)
        outputs = dict(zip(self._output_names, self.run_images(batch), strict=True))
        return detections(outputs, card, sizes, score_threshold)

    def segment(
        self, images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike]
    ) -> list[np.ndarray]:
        """Per raw image an int64 [H, W] map of class indices (``card.class_names``) at the
        image's own size."""
        card = self._image_card("segment")
        batch, sizes = prepare_images(images, card)
        outputs = dict(zip(self._output_names, self.run_images(batch), strict=True))
        return label_maps(outputs, card, sizes)
