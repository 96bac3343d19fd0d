"""The record of the model a tool ran, as ``edgeport check``, ``bench`` and ``tune`` report it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgeport.runtime.bundle import MANIFEST_NAME
from edgeport.runtime.io import sha256_file

if TYPE_CHECKING:
    from edgeport.runtime.source import ModelSource
    from edgeport.runtime.specs import TensorSpec

# What :func:`model_record` holds, for the documented JSON schemas.
MODEL_RECORD_FIELDS = (
    "path, kind (bundle, onnx, engine), name (architecture or file name), task, "
    "num_classes, files {name: sha256}, inputs and outputs [{name, dtype, shape, ranges, "
    "value_range}]; for bundles manifest_sha256 and created"
)


def model_record(
    source: ModelSource,
    specs: tuple[Sequence[TensorSpec], Sequence[TensorSpec]] | None = None,
) -> dict[str, Any]:
    """What was run: path, kind, name, task, the files' sha256 and the inputs/outputs."""
    card = source.card
    record: dict[str, Any] = {
        "path": str(source.path),
        "kind": source.kind,
        "name": card.architecture if card else source.path.name,
        "task": card.task if card else None,
        "num_classes": card.num_classes if card and card.num_classes else None,
        "files": {
            c.label: c.artifact.sha256 if c.artifact else sha256_file(c.path)
            for c in source.candidates
        },
        "inputs": [s.to_dict() for s in specs[0]] if specs else [],
        "outputs": [s.to_dict() for s in specs[1]] if specs else [],
    }
    if source.manifest is not None:
        folder = source.path if source.kind == "bundle" else source.path.parent
        record["manifest_sha256"] = source.manifest_sha256 or sha256_file(folder / MANIFEST_NAME)
        record["created"] = source.manifest.created
    return record
