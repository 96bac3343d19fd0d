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
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgeport.runtime.backends.base import ModelBytes, SideBytes
from edgeport.runtime.backends.onnx_proto import OnnxSummary, onnx_summary_of
from edgeport.runtime.backends.registry import ModelFile
from edgeport.runtime.bundle import SideFile, artifact_files, check_integrity
from edgeport.runtime.errors import ModelLoadError
from edgeport.runtime.io import read_regular_file

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
