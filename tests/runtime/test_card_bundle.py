"""Model card and manifest: round trips and refusal of malformed input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from edgeport.runtime.bundle import (
    Artifact,
    BatchRange,
    EngineInfo,
    Manifest,
    classifier_specs,
    resolve_inside,
    verify_artifact,
)
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, InputError, ModelLoadError
from edgeport.runtime.io import sha256_file


def make_card(**overrides: object) -> ModelCard:
    fields: dict[str, object] = {
        "architecture": "simple_cnn_bn",
        "num_classes": 3,
        "class_names": ("a", "b", "c"),
        "in_channels": 1,
        "input_size": (8, 8),
        "mean": (0.5,),
        "std": (0.5,),
    }
    fields.update(overrides)
    return ModelCard(**fields)  # type: ignore[arg-type]


def test_card_round_trips_through_json(tmp_path: Path) -> None:
    card = make_card(arch_args={"dropout": 0.5})
    path = tmp_path / "card.json"
    path.write_text(card.to_json())
    assert ModelCard.load(path) == card
    assert card.input_shape == (1, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"class_names": ("a", "b")}, "expected 3 class names, got 2"),
        ({"in_channels": 2}, "in_channels must be 1 or 3, got 2"),
        ({"std": (0.0,)}, "std must be positive"),
        ({"mean": (0.5, 0.5)}, "mean needs 1 values, got 2"),
        ({"interpolation": "lanczos"}, "interpolation must be one of"),
    ],
)
def test_card_rejects_inconsistent_fields(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_card(**overrides)


def test_card_load_names_the_bad_file(tmp_path: Path) -> None:
    missing = tmp_path / "card.json"
    with pytest.raises(ModelLoadError, match=str(missing)):
        ModelCard.load(missing)
    missing.write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        ModelCard.load(missing)
    missing.write_text(json.dumps({**make_card().to_dict(), "colour": "blue"}))
    with pytest.raises(ModelLoadError, match="unknown fields"):
        ModelCard.load(missing)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1:8:32", BatchRange(1, 8, 32)),
        ("4", BatchRange(4, 4, 4)),
        (" 2 : 2 : 3 ", BatchRange(2, 2, 3)),
    ],
)
def test_batch_range_parses(text: str, expected: BatchRange) -> None:
    assert BatchRange.parse(text) == expected


@pytest.mark.parametrize("text", ["0:1:2", "8:4:16", "1:2", "a:b:c", ""])
def test_batch_range_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="batch range"):
        BatchRange.parse(text)


def make_artifact(tmp_path: Path, **overrides: object) -> Artifact:
    data = tmp_path / "model.onnx"
    data.write_bytes(b"onnx bytes")
    fields: dict[str, object] = {
        "name": "onnx-fp32",
        "format": "onnx",
        "precision": "fp32",
        "path": "model.onnx",
        "sha256": sha256_file(data),
        "size_bytes": data.stat().st_size,
        "inputs": classifier_specs((1, 8, 8), 10, BatchRange(1, 8, 32))[0],
        "outputs": classifier_specs((1, 8, 8), 10, BatchRange(1, 8, 32))[1],
    }
    fields.update(overrides)
    return Artifact(**fields)  # type: ignore[arg-type]


def test_manifest_round_trips(tmp_path: Path) -> None:
    engine = make_artifact(
        tmp_path,
        name="tensorrt-fp32",
        format="tensorrt",
        engine=EngineInfo(flavour="tensorrt_rtx", version="1.7.1"),
    )
    manifest = Manifest(card=make_card(), artifacts=(make_artifact(tmp_path), engine))
    manifest.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded == manifest
    assert loaded.artifact("tensorrt-fp32").engine == engine.engine


def test_manifest_refuses_paths_outside_the_bundle(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="relative and inside the bundle"):
        make_artifact(tmp_path, path="../elsewhere.onnx")
    (tmp_path / "outside").mkdir()
    link = tmp_path / "bundle"
    link.mkdir()
    (link / "escape.onnx").symlink_to(tmp_path / "outside")
    with pytest.raises(ModelLoadError, match="outside the bundle"):
        resolve_inside(link, "escape.onnx")


def test_verify_artifact_detects_changed_and_truncated_files(tmp_path: Path) -> None:
    artifact = make_artifact(tmp_path)
    assert verify_artifact(tmp_path, artifact) == (tmp_path / "model.onnx").resolve()
    (tmp_path / "model.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(ModelLoadError, match="sha256"):
        verify_artifact(tmp_path, artifact)
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelLoadError, match="truncated"):
        verify_artifact(tmp_path, artifact)
    with pytest.raises(ModelLoadError, match="missing"):
        verify_artifact(tmp_path, replace(artifact, path="gone.onnx"))


def test_manifest_missing_or_invalid(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a bundle"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(ModelLoadError, match="schema_version 99"):
        Manifest.load(tmp_path)


def test_atomic_files_get_normal_permissions(tmp_path: Path) -> None:
    import os

    from edgeport.runtime.io import atomic_write_text

    previous = os.umask(0o027)  # the umask in force when writing applies, not an earlier one
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
