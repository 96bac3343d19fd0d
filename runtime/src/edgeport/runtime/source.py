"""A model file read once: the bytes that were hashed are the bytes the engine gets.

Verifying a file and then letting the engine open its path again leaves a window in which the
file can be swapped (a same-size file, renamed over it or rewritten in place) and run
unverified. So ``load`` reads each file once (a regular file only, opened without blocking),
hashes those bytes against the manifest, and hands the same bytes to the engine: ONNX Runtime's
``InferenceSession`` and OpenVINO's ``read_model`` take a model from memory, TensorRT
deserialises a plan from bytes. External-data weights, which no manifest hashes, are read by
the engine from the model's directory (after :func:`check_external_data`): ONNX Runtime is told
that folder; OpenVINO finds them only through the model's own path, so it opens a bare file
that has them by path and refuses a verified artifact that has them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from edgeport.runtime.backends.base import ModelBytes
from edgeport.runtime.backends.onnx_proto import OnnxSummary, onnx_summary_of
from edgeport.runtime.backends.registry import ModelFile
from edgeport.runtime.bundle import artifact_path, check_integrity
from edgeport.runtime.errors import ModelLoadError
from edgeport.runtime.io import read_regular_file

MAX_ONNX_BYTES = 2 << 30  # protobuf's limit: larger models keep their weights as external data
MAX_PLAN_BYTES = 16 << 30


def read_model_bytes(cand: ModelFile, *, verify: bool) -> ModelBytes:
    """Read ``cand``'s file once; with ``verify`` (and a manifest entry) check the bytes' size and
    sha256 (``IntegrityError`` on a mismatch); parse an ONNX file's inputs, outputs and external
    data from the same bytes and refuse external data that leaves the bundle (or the file's
    directory)."""
    path = cand.path
    if cand.bundle_dir is not None and cand.artifact is not None:
        path = artifact_path(cand.bundle_dir, cand.artifact)
    onnx = cand.format == "onnx"
    data = read_regular_file(
        path,
        what="ONNX file" if onnx else "engine file",
        max_bytes=MAX_ONNX_BYTES if onnx else MAX_PLAN_BYTES,
    )
    digest = None
    if verify and cand.artifact is not None:
        digest = hashlib.sha256(data).hexdigest()
        check_integrity(cand.artifact, path, len(data), digest)
    if not onnx:
        if not data:
            raise ModelLoadError(f"engine file {path} is empty (0 bytes); rebuild the engine")
        return ModelBytes(path, data, known_sha256=digest)
    summary = onnx_summary_of(data, path)
    check_external_data(path, summary, cand.bundle_dir or path.parent)
    return ModelBytes(path, data, summary, digest)


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
