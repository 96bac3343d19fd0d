"""``load`` a bundle, ONNX file or TensorRT engine; ``Model.run`` logits; ``Model.predict`` labels.

``load`` resolves the path (bundle directory, ``.onnx``, ``.engine``/``.plan``), lists what
could run it, lets :mod:`edgeport.runtime.backends.registry` order the candidates, verifies the
chosen file (sha256 against the manifest, external data inside the model's directory) and opens
it. ``Model`` validates every batch before the backend sees it.

Input policy of ``Model.run``: a C-contiguous-or-not ``numpy.ndarray`` of dtype float32 and
shape (N, C, H, W) matching the model, N inside its batch range, all values finite. Other
dtypes, float64 included, are refused rather than converted: a float64 batch usually means the
preprocessing was not the card's (which yields float32), and a silent conversion would hide
that. Convert with ``batch.astype(np.float32)``, or give raw images to ``Model.predict``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import UNBOUNDED_BATCH, Backend
from edgeport.runtime.backends.cuda import parse_device
from edgeport.runtime.backends.onnx_proto import OnnxSummary, read_onnx_summary
from edgeport.runtime.backends.registry import (
    PRECISION_RULE,
    Attempt,
    Candidate,
    check_backend_name,
    parity_failed_text,
    steps,
)
from edgeport.runtime.bundle import (
    MANIFEST_NAME,
    PRECISIONS,
    Artifact,
    BatchRange,
    Manifest,
    artifact_path,
    resolve_inside,
    verify_artifact,
)
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    InputError,
    ModelLoadError,
)
from edgeport.runtime.preprocess import ImageLike, preprocess

log = logging.getLogger(__name__)

ENGINE_SUFFIXES = (".engine", ".plan")
PRECISION_METADATA_KEY = "edgeport.precision"
_F32 = np.dtype(np.float32)


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

    kind: str  # "bundle", "onnx", "engine"
    path: Path
    card: ModelCard | None
    candidates: list[Candidate]
    manifest: Manifest | None = None
    summary: OnnxSummary | None = None  # the parsed file, for a bare .onnx (its one candidate)


def load(
    path: str | Path,
    backend: str = "auto",
    precision: str | None = None,
    device: str | int | None = None,
    *,
    threads: int | None = None,
    cuda_graph: bool = False,
    verify: bool = True,
) -> Model:
    """Open a model for inference on the best backend this machine has (or the one asked for).

    ``path``: a bundle directory, an ``.onnx`` file or an ``.engine``/``.plan`` file.
    ``backend``: "auto", "tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt" or
    "onnxruntime-cpu". ``precision``: None (automatic, see ``registry.PRECISION_RULE``) or one of
    fp32/fp16/int8. ``device``: None (any), "cpu", "cuda", "cuda:N" or N. ``threads``: ONNX
    Runtime intra-op threads (None: its default). ``cuda_graph``: replay a captured CUDA graph
    (GPU backends; fixed shapes). ``verify``: check the artifact's sha256 against the manifest.
    """
    check_backend_name(backend)
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; expected None or one of {PRECISIONS}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive integer or None, got {threads!r}")
    device_kind, device_index = parse_device(device)
    source = resolve_source(path)
    if precision is not None and not any(c.precision == precision for c in source.candidates):
        have = sorted({c.precision or "unknown precision" for c in source.candidates})
        what = "bundle" if source.kind == "bundle" else "file"
        raise ConfigError(
            f"{source.path}: no {precision} artifact in this {what} (it has {', '.join(have)})"
        )
    attempts: list[Attempt] = []
    for step in steps(
        source.candidates,
        backend=backend,
        precision=precision,
        device_kind=device_kind,
        device_index=device_index,
    ):
        if isinstance(step, Attempt):
            attempts.append(step)
            continue
        name, cand = step
        try:
            opened = _open(name, cand, source, device_index, threads, cuda_graph, verify)
        except BackendUnavailable as exc:
            attempts.append(Attempt(name, cand.label, cand.precision, "failed", str(exc)))
            log.debug("%s could not open %s: %s", name, cand.label, exc)
            continue
        note = ""
        if precision is not None and cand.parity_passed is False:
            note = parity_failed_text(cand)
            log.warning("%s: loading %s although %s", source.path, cand.label, note)
        attempts.append(Attempt(name, cand.label, cand.precision, "chosen", note))
        model = _make_model(opened, name, cand, source, attempts, cuda_graph, threads)
        log.debug("loaded %s: %s on %s", source.path, cand.label, name)
        return model
    lines = "\n".join(f"  - {a}" for a in attempts) or "  (no candidates)"
    raise BackendUnavailable(
        f"no backend can run {source.path} here (backend={backend!r}, precision={precision!r}, "
        f"device={device!r}):\n{lines}"
    )


# -- resolving the path -------------------------------------------------------------------------


def resolve_source(path: str | Path) -> ModelSource:
    """Read what ``path`` holds (manifest, ONNX metadata) without opening any backend."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(
            f"no such file or directory: {path}; expected a bundle directory, an .onnx file or "
            "an .engine/.plan file"
        )
    if path.is_dir():
        manifest = Manifest.load(path)
        return ModelSource(
            "bundle",
            path,
            manifest.card,
            [_bundle_candidate(path, art) for art in manifest.artifacts],
            manifest,
        )
    suffix = path.suffix.lower()
    if suffix not in (".onnx", *ENGINE_SUFFIXES):
        raise ModelLoadError(
            f"{path} is not a model edgeport can load: expected a bundle directory (with "
            f"{MANIFEST_NAME}), an .onnx file or an .engine/.plan file, got {suffix or 'no suffix'}"
        )
    sibling, artifact = _sibling_manifest(path)
    if sibling is not None and artifact is not None:
        return ModelSource(
            "onnx" if suffix == ".onnx" else "engine",
            path,
            sibling.card,
            [_bundle_candidate(path.parent, artifact)],
            sibling,
        )
    if suffix == ".onnx":
        summary = read_onnx_summary(path)
        card = _card_from_metadata(path, summary)
        precision = summary.metadata.get(PRECISION_METADATA_KEY) or summary.guess_precision()
        cand = Candidate("onnx", precision, path, path.name)
        return ModelSource("onnx", path, card, [cand], summary=summary)
    _check_engine_file(path)
    match = re.search(r"\.(fp32|fp16|int8)\.", path.name)
    cand = Candidate("tensorrt", match.group(1) if match else None, path, path.name)
    return ModelSource("engine", path, None, [cand])


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


def _bundle_candidate(bundle_dir: Path, art: Artifact) -> Candidate:
    return Candidate(
        art.format,
        art.precision,
        bundle_dir / art.path,
        art.name,
        artifact=art,
        engine=art.engine,
        bundle_dir=bundle_dir,
    )


def _sibling_manifest(path: Path) -> tuple[Manifest | None, Artifact | None]:
    """The manifest next to a single file, and its entry for that file, when there is one."""
    if not (path.parent / MANIFEST_NAME).is_file():
        return None, None
    manifest = Manifest.load(path.parent)
    target = path.resolve()
    for art in manifest.artifacts:
        try:
            if resolve_inside(path.parent, art.path) == target:
                return manifest, art
        except ModelLoadError:
            continue  # an entry leaving the bundle is not this file; verify refuses it later
    return manifest, None


def _card_from_metadata(path: Path, summary: OnnxSummary) -> ModelCard | None:
    text = summary.metadata.get(ONNX_METADATA_KEY)
    if text is None:
        log.info(
            "%s has no %r metadata: Model.run works, Model.predict needs a model card",
            path,
            ONNX_METADATA_KEY,
        )
        return None
    try:
        return ModelCard.from_json(text)
    except InputError as exc:
        raise ModelLoadError(f"{path}: the embedded model card is invalid: {exc}") from exc


def check_external_data(model_path: Path, summary: OnnxSummary, root: Path) -> None:
    """Refuse external-data locations that are absolute, climb out of ``root`` or are missing."""
    root_resolved = root.resolve()
    for location in sorted(set(summary.external_data)):
        rel = Path(location)
        target = (model_path.parent / rel).resolve()
        inside = target == root_resolved or root_resolved in target.parents
        if rel.is_absolute() or ".." in rel.parts or not inside:
            raise ModelLoadError(
                f"{model_path} stores weights in external data at {location!r}, which points "
                f"outside {root_resolved}; refusing to read it. External data must be a relative "
                "path inside the model's directory"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{model_path} needs its external data file {location!r}, which is missing "
                f"(looked for {target}); copy it next to the model"
            )


# -- opening -------------------------------------------------------------------------------------


def _verified_path(cand: Candidate, verify: bool) -> Path:
    if cand.bundle_dir is None or cand.artifact is None:
        return cand.path
    check = verify_artifact if verify else artifact_path
    return check(cand.bundle_dir, cand.artifact)


def _open(
    name: str,
    cand: Candidate,
    source: ModelSource,
    device_index: int,
    threads: int | None,
    cuda_graph: bool,
    verify: bool,
) -> Backend:
    path = _verified_path(cand, verify)
    if name == "tensorrt":
        from edgeport.runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, cand.engine, device_index=device_index, cuda_graph=cuda_graph)

    from edgeport.runtime.backends.onnxrt import (
        OnnxRuntimeBackend,
        OrtSettings,
        tensorrt_profile_options,
    )

    summary = source.summary if source.summary is not None else read_onnx_summary(path)
    check_external_data(path, summary, cand.bundle_dir or path.parent)
    profile = None
    if name == "onnxruntime-tensorrt" and cand.artifact is not None and source.card is not None:
        b = cand.artifact.batch
        profile = tensorrt_profile_options(
            cand.artifact.input_name, source.card.input_shape, (b.min, b.opt, b.max)
        )
    settings = OrtSettings(
        threads=threads,
        device_index=device_index,
        cuda_graph=cuda_graph and name != "onnxruntime-cpu",
        precision=cand.precision or "fp32",
        tensorrt_profile=profile,
        num_classes=source.card.num_classes if source.card else None,
    )
    return OnnxRuntimeBackend(path, name, settings)


def _make_model(
    opened: Backend,
    name: str,
    cand: Candidate,
    source: ModelSource,
    attempts: list[Attempt],
    cuda_graph: bool,
    threads: int | None,
) -> Model:
    try:
        input_shape, batch_range = _agree(opened, cand, source.card)
    except BaseException:
        opened.close()
        raise
    notes = []
    if cuda_graph and name == "onnxruntime-cpu":
        notes.append("cuda_graph=True has no effect on onnxruntime-cpu")
    if threads is not None and name == "tensorrt":
        notes.append("threads applies to ONNX Runtime only; TensorRT ignores it")
    return Model(
        opened,
        path=source.path,
        card=source.card,
        artifact=cand.artifact,
        precision=cand.precision or "unknown",
        input_shape=input_shape,
        batch_range=batch_range,
        attempts=attempts,
        notes=notes,
    )


def _agree(
    opened: Backend, cand: Candidate, card: ModelCard | None
) -> tuple[tuple[int | None, ...], BatchRange]:
    """Check that the file, the manifest and the card describe the same model."""
    where = f"{cand.path} ({cand.label})"
    file_shape = opened.input.shape
    if len(file_shape) != 4:
        raise ModelLoadError(
            f"{where}: input {opened.input.name} has shape {file_shape}; edgeport needs NCHW"
        )
    file_chw = tuple(d if isinstance(d, int) and d > 0 else None for d in file_shape[1:])
    chw: tuple[int | None, ...] = file_chw
    if card is not None:
        for have, want, axis in zip(
            file_chw, card.input_shape, ("channels", "height", "width"), strict=True
        ):
            if have is not None and have != want:
                raise ModelLoadError(
                    f"{where}: the file's input has {axis} {have}, the model card says {want} "
                    f"(file shape {file_shape}, card input {card.input_shape}); re-export the model"
                )
        chw = card.input_shape
        classes = opened.output.shape[1] if len(opened.output.shape) == 2 else None
        if isinstance(classes, int) and classes != card.num_classes:
            raise ModelLoadError(
                f"{where}: the file outputs {classes} classes, the model card lists "
                f"{card.num_classes}; re-export the model"
            )
    art = cand.artifact
    if art is not None:
        if art.input_name != opened.input.name or art.output_name != opened.output.name:
            raise ModelLoadError(
                f"{where}: the manifest names input/output {art.input_name!r}/{art.output_name!r}, "
                f"the file has {opened.input.name!r}/{opened.output.name!r}; re-export the bundle"
            )
        limits = opened.batch_limits
        if limits is not None and not limits[0] <= art.batch.min <= art.batch.max <= limits[2]:
            raise ModelLoadError(
                f"{where}: the manifest's batch range {art.batch} is not within what the file "
                f"accepts ({limits[0]}..{limits[2]}); re-export the bundle"
            )
        return chw, art.batch
    if opened.batch_limits is not None:
        return chw, BatchRange(*opened.batch_limits)
    return chw, BatchRange(1, 1, UNBOUNDED_BATCH)


# -- the model ---------------------------------------------------------------------------------


def run_in_chunks(
    run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, chunk: int, min_batch: int = 1
) -> np.ndarray:
    """``run`` over any number of samples, in chunks of at most ``chunk``; a last chunk smaller
    than ``min_batch`` is padded with copies of its last sample, whose outputs are dropped."""
    outputs = []
    for start in range(0, batch.shape[0], chunk):
        part = batch[start : start + chunk]
        count = part.shape[0]
        if count < min_batch:
            part = np.concatenate([part, np.repeat(part[-1:], min_batch - count, axis=0)])
        outputs.append(np.asarray(run(part))[:count])
    return np.concatenate(outputs)


class Model:
    """An opened classifier: ``run`` (float32 NCHW in, logits out) and ``predict`` (images in,
    labels out). Safe to call from several threads at once. Close it (or use ``with``) to free
    GPU memory."""

    def __init__(
        self,
        backend: Backend,
        *,
        path: Path,
        card: ModelCard | None,
        artifact: Artifact | None,
        precision: str,
        input_shape: tuple[int | None, ...],
        batch_range: BatchRange,
        attempts: list[Attempt],
        notes: list[str] | None = None,
    ) -> None:
        self._backend: Backend | None = backend
        self._backend_name = backend.name
        self._describe = backend.describe()
        self.path = path
        self.card = card
        self.artifact = artifact
        self.precision = precision
        self.input_shape = input_shape
        self.batch_range = batch_range
        self.input_name = backend.input.name
        self.output_name = backend.output.name
        self.attempts = list(attempts)
        self.notes = list(notes or [])
        # Pre-computed for the per-call checks in run().
        self._chw = input_shape if all(d is not None for d in input_shape) else None
        self._known_axes = tuple((i + 1, d) for i, d in enumerate(input_shape) if d is not None)
        self._batch_min, self._batch_max = batch_range.min, batch_range.max

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
        return self.card.num_classes if self.card else None

    # -- running --------------------------------------------------------------------------------

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 logits, shape (N, classes), for a preprocessed float32 (N, C, H, W) batch."""
        backend = self._backend
        if backend is None:
            raise ModelLoadError(f"this model ({self.path}) is closed; load it again")
        if (
            not isinstance(batch, np.ndarray)
            or batch.dtype != _F32
            or batch.ndim != 4
            or (self._chw is not None and batch.shape[1:] != self._chw)
            or (self._chw is None and any(batch.shape[i] != d for i, d in self._known_axes))
        ):
            self._raise_bad_batch(batch)
        if not self._batch_min <= batch.shape[0] <= self._batch_max:
            raise InputError(
                f"batch size {batch.shape[0]} is outside this model's range "
                f"{self._range_text()} (shape {batch.shape}); "
                + ("split the batch" if batch.shape[0] > self._batch_max else "pad the batch")
            )
        if not batch.flags.c_contiguous:
            batch = np.ascontiguousarray(batch)
        # NaN/Inf check in one BLAS call: the sum of squares is finite iff every value is, unless
        # huge values overflow it, which the exact check below tells apart. (np.isfinite(...).all()
        # costs several times more per call, see benchmarks/runtime_overhead.py.)
        if not math.isfinite(np.vdot(batch, batch)) and not np.isfinite(batch).all():
            self._raise_not_finite(batch)
        return backend.run(batch)

    def _expected(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.input_shape)
        return f"(N, C, H, W) = (N, {dims})"

    def _range_text(self) -> str:
        high = "unbounded" if self._batch_max >= UNBOUNDED_BATCH else str(self._batch_max)
        return f"{self._batch_min}..{high}"

    def _raise_bad_batch(self, batch: Any) -> None:
        if not isinstance(batch, np.ndarray):
            raise InputError(
                f"Model.run expects a numpy float32 array of shape {self._expected()}, got "
                f"{type(batch).__name__}; raw images go through Model.predict"
            )
        if batch.dtype != _F32:
            raise InputError(
                f"expected dtype float32, got {batch.dtype} (shape {batch.shape}); Model.run "
                "does not convert: use batch.astype(np.float32), or give raw images to "
                "Model.predict"
            )
        if batch.ndim != 4:
            hint = "; add a batch axis with batch[None]" if batch.ndim == 3 else ""
            raise InputError(
                f"expected a 4-D batch {self._expected()}, got {batch.ndim}-D shape "
                f"{batch.shape}{hint}"
            )
        channels, height, width = self.input_shape
        if channels is not None and batch.shape[1] != channels:
            raise InputError(
                f"expected {channels} channels (axis 1 of {self._expected()}), got "
                f"{batch.shape[1]} in shape {batch.shape}"
            )
        raise InputError(
            f"expected height x width {height}x{width}, got {batch.shape[2]}x{batch.shape[3]} "
            f"(shape {batch.shape}); resize to the card's input size (Model.predict does)"
        )

    def _raise_not_finite(self, batch: np.ndarray) -> None:
        nan = int(np.isnan(batch).sum())
        inf = int(np.isinf(batch).sum())
        first = int(np.argwhere(~np.isfinite(batch))[0][0])
        raise InputError(
            f"expected finite values, got {nan} NaN and {inf} Inf in the batch of shape "
            f"{batch.shape} (first in sample {first}); check the preprocessing"
        )

    def predict(
        self, images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike], top_k: int = 5
    ) -> list[Prediction]:
        """Class names and probabilities for raw images (paths, PIL images, uint8 HWC arrays;
        grey, RGB or RGBA), resized and normalised as the model card says."""
        card = self.card
        if card is None:
            raise ModelLoadError(
                f"{self.path} has no model card (no bundle manifest and no "
                f"{ONNX_METADATA_KEY!r} ONNX metadata), so predict cannot preprocess images or "
                "name classes; use Model.run on preprocessed float32 batches, or load the bundle"
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        batch = preprocess(images, card)
        logits = self._run_in_chunks(batch)
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

    def _run_in_chunks(self, batch: np.ndarray) -> np.ndarray:
        """Run any number of images within the batch range: split above max, pad below min."""
        return run_in_chunks(self.run, batch, self._batch_max, self._batch_min)

    # -- description and lifetime ---------------------------------------------------------------

    def explain(self) -> str:
        """Which backend and artifact were chosen, with what settings, and why the others not."""
        target = self.artifact.name if self.artifact else self.path.name
        lines = [
            f"model: {self.path}",
            f"chosen: {self.backend}, {target} ({self.precision})",
        ]
        lines += [f"  {key}: {value}" for key, value in self.describe().items()]
        lines.append(
            f"input: {self.input_name} {self._expected()}, batch {self._range_text()} "
            f"(opt {self.batch_range.opt}); output: {self.output_name}"
        )
        lines.append("candidates, in the order considered:")
        lines += [f"  - {a}" for a in self.attempts]
        lines.append(f"precision rule: {PRECISION_RULE}")
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
