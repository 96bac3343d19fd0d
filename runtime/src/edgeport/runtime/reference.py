"""A bundle's stored reference: the inputs, labels and PyTorch outputs saved at export.

``edgeport check`` judges artifacts against them on a device without torch, ``edgeport bench``
times on the same real inputs, and the PyTorch baselines rebuild the model from the stored
weights. Every file is confined to the bundle and checked against the manifest's sha256.

Layout (``manifest.reference``): ``inputs`` (``reference/inputs.npz``, one array per model
input), ``outputs`` (``reference/outputs.npz``, one per output), optional ``labels``
(``reference/labels.npy``) and ``weights``. Bundles of schema 1 stored one image input as
``inputs.npy`` and the logits as ``logits``; they still load.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.bundle import Manifest, resolve_inside
from edgeport.runtime.errors import InputError, ModelLoadError
from edgeport.runtime.feeds import load_npz
from edgeport.runtime.io import sha256_file

REFERENCE_DIR = "reference"


@dataclass(frozen=True)
class StoredReference:
    """Reference inputs and outputs by name (model order), with labels when the data had them."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    dataset: str | None = None
    split: str | None = None

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values())))

    def head(self, limit: int | None) -> StoredReference:
        """The first ``limit`` samples (all for None)."""
        if limit is None:
            return self
        cut = slice(None, limit)
        return StoredReference(
            {k: v[cut] for k, v in self.inputs.items()},
            {k: v[cut] for k, v in self.outputs.items()},
            None if self.labels is None else self.labels[cut],
            self.dataset,
            self.split,
        )


def reference_file(bundle_dir: Path, manifest: Manifest, key: str) -> Path | None:
    """The bundle's reference file ``key`` ("inputs", "outputs", "labels", "weights", or the
    schema-1 "logits"), checked to stay inside the bundle and to match the manifest's sha256;
    None when the manifest has none."""
    ref = manifest.reference or {}
    rel = ref.get(key)
    if not rel:
        return None
    path = resolve_inside(bundle_dir, rel)
    if not path.is_file():
        raise ModelLoadError(
            f"the manifest lists reference {key} at {rel} but {path} is missing; re-export the "
            "bundle"
        )
    expected = (ref.get("sha256") or {}).get(rel)
    if expected:
        digest = sha256_file(path)
        if digest != expected:
            raise ModelLoadError(
                f"reference file {path} has sha256 {digest}, the manifest says {expected}: "
                "it was modified; re-export the bundle"
            )
    return path


def _arrays(path: Path, names: list[str], key: str) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        try:
            arrays = load_npz(path)
        except InputError as exc:
            raise ModelLoadError(f"cannot read reference {key} {path}: {exc}") from exc
        if list(arrays) != names:
            raise ModelLoadError(
                f"reference {key} {path} holds {list(arrays)}, the model has {names}; re-export"
            )
        return arrays
    try:
        return {names[0]: np.load(path, allow_pickle=False)}
    except ValueError as exc:
        raise ModelLoadError(f"cannot read reference {key} {path}: {exc}") from exc


def load_reference(bundle_dir: Path, manifest: Manifest) -> StoredReference | None:
    """The stored reference of a bundle (verified), None when it stores none."""
    ref = manifest.reference or {}
    if not ref.get("inputs"):
        return None
    art = manifest.artifacts[0]
    in_names = [s.name for s in art.inputs]
    out_names = [s.name for s in art.outputs]
    inputs_path = reference_file(bundle_dir, manifest, "inputs")
    outputs_path = reference_file(bundle_dir, manifest, "outputs") or reference_file(
        bundle_dir, manifest, "logits"
    )
    if inputs_path is None or outputs_path is None:
        raise ModelLoadError(
            f"bundle {bundle_dir}: the manifest's reference lacks inputs or outputs"
        )
    inputs = _arrays(inputs_path, in_names, "inputs")
    outputs = _arrays(outputs_path, out_names, "outputs")
    labels_path = reference_file(bundle_dir, manifest, "labels")
    labels = None if labels_path is None else np.load(labels_path, allow_pickle=False)
    counts = {len(a) for a in (*inputs.values(), *outputs.values())}
    if labels is not None:
        counts.add(len(labels))
    if len(counts) != 1:
        raise ModelLoadError(
            f"bundle {bundle_dir}: reference inputs, outputs and labels differ in sample count "
            f"({sorted(counts)}); re-export the bundle"
        )
    return StoredReference(inputs, outputs, labels, ref.get("dataset"), ref.get("split"))


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """``arrays`` as the bytes of an uncompressed .npz (for an atomic write)."""
    buffer = io.BytesIO()
    savez: Any = np.savez  # its stubs type **kwds as its own bool options
    savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
