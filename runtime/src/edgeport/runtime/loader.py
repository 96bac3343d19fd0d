"""``load``: open a bundle, ONNX file, TensorRT engine, OpenVINO IR, ExecuTorch or LiteRT file
on the best backend this machine has, or exactly one artifact on the backend asked for.

``load`` resolves the path (:func:`edgeport.runtime.source.resolve_source`), lets
:mod:`edgeport.runtime.backends.registry` order the candidates (and refuse what may not run),
reads the chosen file (and the other files it needs, such as an IR's weights) once, verifies
those bytes (sizes and sha256 against the manifest, external data inside the model's directory)
and opens the engine on the same bytes through the backend's record (``BackendSpec.open``). The
file's inputs and outputs are checked against what the manifest and the model card declare
before a :class:`~edgeport.runtime.model.Model` is made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgeport.runtime.backends.base import Backend
from edgeport.runtime.backends.cuda import parse_device
from edgeport.runtime.backends.registry import (
    Attempt,
    ModelFile,
    Request,
    backend_spec,
    backend_specs,
    check_backend_name,
    parity_failed_text,
    record_refusal,
    rule_text,
    steps,
)
from edgeport.runtime.backends.spec import OpenRequest
from edgeport.runtime.bundle import PRECISIONS, Artifact
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import BackendUnavailable, ConfigError, ModelLoadError, ParityError
from edgeport.runtime.model import Model
from edgeport.runtime.source import (
    ModelBytes,
    ModelSource,
    bundle_candidate,
    read_model_bytes,
    resolve_source,
    with_bf16,
)
from edgeport.runtime.specs import TensorSpec, merge_specs

log = logging.getLogger(__name__)


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
    ``backend``: "auto" or the name of a registered backend (``registry.backend_names()``:
    "tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "openvino",
    "litert", "executorch", and any added with ``registry.register``).
    ``precision``: None (automatic, see ``registry.rule_text()``) or one of
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

    One artifact on one backend: with ``artifact`` and a named ``backend``, that artifact opens
    on that backend, or ``BackendUnavailable`` (``ParityError`` for a failed one not allowed)
    says why not; nothing else is tried.
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
        if values["backend_options"] and backend != "auto" and not backend_spec(backend).options:
            takers = ", ".join(s.name for s in backend_specs() if s.options)
            raise ConfigError(f"backend_options are taken by {takers} only, not by {backend}")
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


def _open(
    name: str, cand: ModelFile, model: ModelBytes, card: ModelCard | None, options: LoadOptions
) -> Backend:
    """Open the bytes that were read (and verified) on backend ``name``; a format that keeps no
    tensor names takes them from the manifest or the card."""
    declared = cand.artifact or (card if card and card.inputs else None)
    request = OpenRequest(
        model=model,
        file=cand,
        input_names=tuple(s.name for s in declared.inputs) if declared else (),
        output_names=tuple(s.name for s in declared.outputs) if declared else (),
        threads=options.threads,
        device_index=options.device_index,
        cuda_graph=options.cuda_graph,
        options=options.backend_options,
    )
    return backend_spec(name).open(request)


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
    cand = bundle_candidate(root, artifact)
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
    spec = backend_spec(name)
    if options.cuda_graph and spec.device == "cpu":
        notes.append(f"cuda_graph=True has no effect on {name}")
    if options.threads is not None and not spec.threads:
        notes.append(f"threads applies to CPU engines; {name} ignores it")
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
