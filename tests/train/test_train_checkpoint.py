"""Checkpoints: safetensors + JSON only, clear errors naming the file for every broken part."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ModelLoadError
from edgeport.train.checkpoint import (
    load_checkpoint,
    load_weights_into,
    save_checkpoint,
)
from edgeport.train.models import build_model


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_missing_run_dir_and_files(tmp_path: Path, run_copy: Path) -> None:
    with pytest.raises(ModelLoadError, match=f"run directory not found: {tmp_path / 'nope'}"):
        load_checkpoint(tmp_path / "nope")
    (run_copy / "weights.safetensors").unlink()
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(run_copy)
    assert f"weights file not found: {run_copy / 'weights.safetensors'}" in str(info.value)
    assert f"--resume {run_copy}" in str(info.value)  # its training state is still there
    (run_copy / "card.json").unlink()
    with pytest.raises(ModelLoadError, match=f"model card not found: {run_copy / 'card.json'}"):
        load_checkpoint(run_copy)


def test_truncated_and_garbage_weights_name_the_file(run_copy: Path) -> None:
    weights = run_copy / "weights.safetensors"
    payload = weights.read_bytes()
    weights.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(run_copy)
    assert f"weights file {weights} is not a readable safetensors file" in str(info.value)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        load_checkpoint(run_copy)


def test_corrupt_card_and_metrics_name_the_file(run_copy: Path) -> None:
    (run_copy / "metrics.json").write_text('{"test_accuracy": 0.9')
    with pytest.raises(ModelLoadError, match=f"{run_copy / 'metrics.json'} is not valid JSON"):
        load_checkpoint(run_copy)
    (run_copy / "card.json").write_text("[1, 2")
    with pytest.raises(ModelLoadError, match=f"model card {run_copy / 'card.json'} is unreadable"):
        load_checkpoint(run_copy)


def test_weights_of_another_model_are_refused(run_copy: Path) -> None:
    card = json.loads((run_copy / "card.json").read_text())
    card["architecture"] = "simple_cnn"  # no BatchNorm: different tensors
    (run_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError) as info:
        load_checkpoint(run_copy)
    message = str(info.value)
    assert f"weights file {run_copy / 'weights.safetensors'} does not match" in message
    assert "unexpected tensors" in message and "features.bn1" in message

    card["architecture"], card["num_classes"] = "simple_cnn_bn", 3
    card["class_names"] = ["a", "b", "c"]
    (run_copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(
        ModelLoadError, match=r"classifier.fc2.weight \(file \(10, 128\), model \(3, 128\)\)"
    ):
        load_checkpoint(run_copy)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("simple_cnn_bn", num_classes=2, in_channels=3, input_size=(8, 8))
    card = ModelCard("simple_cnn_bn", 2, ("no", "yes"), 3, (8, 8), (0.5,) * 3, (0.5,) * 3)
    save_checkpoint(tmp_path, model, card, metrics={"test_accuracy": 0.5}, config={"data": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "card.json", "config.json", "metrics.json", "weights.safetensors",
    ]  # fmt: skip
    loaded = load_checkpoint(tmp_path)
    assert loaded.card == card and loaded.metrics == {"test_accuracy": 0.5}
    assert loaded.dataset == "x"
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model.eval()(x), rtol=0, atol=0)


def test_load_weights_into_reports_missing_tensors(tmp_path: Path) -> None:
    model = build_model("simple_cnn", num_classes=2)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if "fc2" not in k}
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelLoadError, match=r"missing 2 tensors, e.g. \['classifier.fc2.bias'"):
        load_weights_into(model, path)
