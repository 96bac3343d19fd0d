"""Bundles made from the graphs of :mod:`rt_graphs`: artifacts with their manifest entries, a
stored reference, and edits that damage a manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from rt_graphs import gemm_model, make_card, save, small_cnn, specs_of

from edgeport.runtime.bundle import Artifact, BatchRange, EngineInfo, Manifest, classifier_specs
from edgeport.runtime.card import ModelCard
from edgeport.runtime.io import sha256_file
from edgeport.runtime.specs import TensorSpec

DEFAULT_BATCH = BatchRange(1, 4, 16)


def artifact_for(
    bundle: Path,
    rel: str,
    *,
    name: str,
    precision: str,
    chw: Sequence[int],
    batch: BatchRange = DEFAULT_BATCH,
    parity: dict[str, object] | None = None,
    engine: EngineInfo | None = None,
) -> Artifact:
    path = bundle / rel
    inputs, outputs = classifier_specs(tuple(chw), None, batch)
    return Artifact(
        name=name,
        format="tensorrt" if engine else "onnx",
        precision=precision,
        path=rel,
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        inputs=inputs,
        outputs=outputs,
        parity=parity,
        engine=engine,
    )


def passed(ok: bool = True) -> dict[str, object]:
    return {"passed": ok, "failures": [] if ok else ["max_abs 0.5 > 0.0001"]}


def gemm_bundle(
    root: Path,
    precisions: Sequence[str] = ("fp32",),
    *,
    parity: dict[str, dict[str, object] | None] | None = None,
    batch: BatchRange = DEFAULT_BATCH,
) -> Path:
    """A bundle of gemm_model artifacts (1x2x2 input, 3 classes) with a valid manifest."""
    card = make_card(num_classes=3)
    root.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for precision in precisions:
        rel = f"model.{precision}.onnx"
        save(gemm_model(precision=precision), root / rel)
        par = (parity or {}).get(precision, passed())
        artifacts.append(
            artifact_for(
                root,
                rel,
                name=f"onnx-{precision}",
                precision=precision,
                chw=(1, 2, 2),
                parity=par,
                batch=batch,
            )
        )
    Manifest(card=card, artifacts=tuple(artifacts), created="2026-11-28T00:00:00Z").save(root)
    return root


def cnn_bundle(root: Path, card: ModelCard | None = None) -> Path:
    """A bundle of ``small_cnn`` (3x32x32, 10 classes) as onnx-fp32, batch 1:8:32, parity
    passed."""
    save(small_cnn(), root / "model.fp32.onnx")
    art = artifact_for(
        root,
        "model.fp32.onnx",
        name="onnx-fp32",
        precision="fp32",
        chw=(3, 32, 32),
        batch=BatchRange(1, 8, 32),
        parity=passed(),
    )
    Manifest(card=card or make_card(10, 3, (32, 32)), artifacts=(art,)).save(root)
    return root


def rewrite_manifest(bundle: Path, edit: object) -> None:
    """Apply ``edit(dict)`` to manifest.json in place (for tests that damage a bundle)."""
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    edit(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


def any_bundle(
    root: Path,
    models: dict[str, onnx.ModelProto],
    card: ModelCard,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    *,
    batch: tuple[int, int, int] | None = None,
) -> Path:
    """A bundle of ``models`` by precision, with specs from the graphs (the ``batch`` range on
    every leading "batch" axis) and a stored reference (``reference/inputs.npz``,
    ``reference/outputs.npz``, sha256 in the manifest)."""
    from edgeport.runtime.reference import npz_bytes

    def ranged(specs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        if batch is None:
            return specs
        return tuple(
            s.with_ranges((batch, *s.all_ranges[1:])) if s.shape[:1] == ("batch",) else s
            for s in specs
        )

    root.mkdir(parents=True, exist_ok=True)
    artifacts = []
    for precision, model in models.items():
        rel = f"model.{precision}.onnx"
        save(model, root / rel)
        ins, outs = (ranged(specs) for specs in specs_of(model))
        artifacts.append(
            Artifact(
                name=f"onnx-{precision}",
                format="onnx",
                precision=precision,
                path=rel,
                sha256=sha256_file(root / rel),
                size_bytes=(root / rel).stat().st_size,
                inputs=ins,
                outputs=outs,
                parity=passed(),
            )
        )
    files = {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz"}
    (root / "reference").mkdir(exist_ok=True)
    (root / files["inputs"]).write_bytes(npz_bytes(inputs))
    (root / files["outputs"]).write_bytes(npz_bytes(outputs))
    reference = {
        **files,
        "sha256": {rel: sha256_file(root / rel) for rel in files.values()},
        "dataset": "synthetic",
        "count": len(next(iter(inputs.values()))),
    }
    Manifest(card=card, artifacts=tuple(artifacts), reference=reference).save(root)
    return root
