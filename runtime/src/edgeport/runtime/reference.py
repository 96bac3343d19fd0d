"""A bundle's stored reference: the inputs, labels and PyTorch outputs saved at export.

``edgeport check`` judges artifacts against them on a device without torch, ``edgeport bench``
times on the same real inputs, and the PyTorch baselines rebuild the model from the stored
weights. Every file is confined to the bundle and checked against the manifest's sha256.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeport.runtime.bundle import Manifest, resolve_inside
from edgeport.runtime.errors import ModelLoadError
from edgeport.runtime.io import sha256_file


def reference_file(bundle_dir: Path, manifest: Manifest, key: str) -> Path | None:
    """The bundle's reference file ``key`` ("inputs", "labels", "logits", "weights"), checked to
    stay inside the bundle and to match the manifest's sha256; None when the manifest has none."""
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


def load_reference_array(bundle_dir: Path, manifest: Manifest, key: str) -> np.ndarray | None:
    """The verified reference array ``key`` of the bundle, None when the manifest has none."""
    path = reference_file(bundle_dir, manifest, key)
    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ModelLoadError(f"cannot read reference {key} {path}: {exc}") from exc
