"""A model file read once: the bytes that were hashed are the bytes the engine gets.

Verifying a file and then letting the engine open its path again leaves a window in which the
file can be swapped (a same-size file, renamed over it or rewritten in place) and run
unverified. So ``load`` reads each file once (a regular file only, opened without blocking),
hashes those bytes against the manifest, and hands the same bytes to the engine: ONNX Runtime's
``InferenceSession`` and OpenVINO's ``read_model`` take a model from memory, TensorRT
deserialises a plan from bytes, OpenVINO reads an IR's ``.xml`` and its ``.bin`` weights from
memory, LiteRT's interpreter takes ``model_content`` and ExecuTorch loads a program from a
buffer. The other files an artifact needs (``Artifact.files``: an IR's weights) are read,
checked and handed on the same way. External-data weights of an ONNX file, which no manifest
hashes, are read by the engine from the model's directory (after :func:`check_external_data`):
ONNX Runtime is told that folder; OpenVINO finds them only through the model's own path, so it
opens a bare file that has them by path and refuses a verified artifact that has them.

:func:`resolve_source` tells what a path holds (a bundle directory, an ``.onnx`` file, a TensorRT
engine, an OpenVINO IR ``.xml``, an ExecuTorch ``.pte`` or a LiteRT ``.tflite``; a file beside a
manifest is that manifest's artifact) and lists the files some backend might run, without
opening any backend.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

from edgeport.runtime.backends.base import ModelBytes, SideBytes
from edgeport.runtime.backends.onnx_proto import OnnxSummary, onnx_summary_of, read_onnx_summary
from edgeport.runtime.backends.spec import ModelFile
from edgeport.runtime.bundle import (
    MANIFEST_NAME,
    Artifact,
    Manifest,
    SideFile,
    artifact_files,
    check_integrity,
    resolve_inside,
)
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.errors import BackendUnavailable, InputError, ModelLoadError
from edgeport.runtime.io import read_regular_file

log = logging.getLogger(__name__)

MAX_ONNX_BYTES = 2 << 30  # protobuf's limit: larger models keep their weights as external data
MAX_MODEL_BYTES = 16 << 30  # engines, IR, .pte, .tflite and their side files
WHAT = {
    "onnx": "ONNX file",
    "tensorrt": "engine file",
    "openvino": "OpenVINO IR",
    "executorch": "ExecuTorch program",
    "litert": "LiteRT file",
}


def read_model_bytes(cand: ModelFile, *, verify: bool) -> ModelBytes:
    """Read ``cand``'s file, and the other files it needs, once each; with ``verify`` (and a
    manifest entry) check each one's size and sha256 (``IntegrityError`` on a mismatch); parse
    an ONNX file's inputs, outputs and external data from the same bytes and refuse external
    data that leaves the bundle (or the file's directory)."""
    (path, entry), *others = _files(cand)
    what = WHAT.get(cand.format, "model file")
    limit = MAX_ONNX_BYTES if cand.format == "onnx" else MAX_MODEL_BYTES
    data, known = _read(cand, path, entry, what, limit, verify)
    side = []
    for file, want in others:
        extra, digest = _read(cand, file, want, f"{what} side file", MAX_MODEL_BYTES, verify)
        side.append(SideBytes(file, extra, digest or hashlib.sha256(extra).hexdigest()))
    if cand.format != "onnx":
        if not data:
            again = "rebuild the engine" if cand.format == "tensorrt" else "export it again"
            raise ModelLoadError(f"{what} {path} is empty (0 bytes); {again}")
        return ModelBytes(path, data, known_sha256=known, side_files=tuple(side))
    summary = onnx_summary_of(data, path)
    check_external_data(path, summary, cand.bundle_dir or path.parent)
    return ModelBytes(path, data, summary, known)


def _files(cand: ModelFile) -> list[tuple[Path, SideFile | None]]:
    """The candidate's file and the other files it needs, with what its manifest says of each
    (None for a bare file): an artifact's ``files``; beside a bare OpenVINO IR, its ``.bin``."""
    if cand.bundle_dir is not None and cand.artifact is not None:
        return list(artifact_files(cand.bundle_dir, cand.artifact))
    weights = cand.path.with_suffix(".bin")
    if cand.format == "openvino" and weights.is_file():
        return [(cand.path, None), (weights, None)]
    return [(cand.path, None)]


def _read(
    cand: ModelFile, path: Path, entry: SideFile | None, what: str, limit: int, verify: bool
) -> tuple[bytes, str | None]:
    """One file's bytes, and their sha256 once checked against ``entry`` (with ``verify``)."""
    data = read_regular_file(path, what=what, max_bytes=limit)
    if not verify or cand.artifact is None or entry is None:
        return data, None
    digest = hashlib.sha256(data).hexdigest()
    check_integrity(cand.artifact, path, len(data), digest, entry=entry)
    return data, digest


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


# -- what a path holds ---------------------------------------------------------------------------

ENGINE_SUFFIXES = (".engine", ".plan")
# bare files of the formats besides ONNX and engines, by suffix: their ModelSource kind
FILE_FORMATS = {".xml": "openvino", ".pte": "executorch", ".tflite": "litert"}
_PRECISION_IN_NAME = re.compile(r"\.(fp32|fp16|int8)\.")
PRECISION_METADATA_KEY = "edgeport.precision"


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
            [bundle_candidate(path, art) for art in manifest.artifacts],
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
            [bundle_candidate(path.parent, art) for art in artifacts],
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


def bundle_candidate(bundle_dir: Path, art: Artifact) -> ModelFile:
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
