"""The training loop: what a run directory holds, reproducibility, resuming, bad settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, DatasetError
from edgeport.train.checkpoint import load_checkpoint
from edgeport.train.loop import TrainConfig, load_train_config, train

RUN_FILES = {
    "weights.safetensors", "card.json", "metrics.json", "config.json", "curves.png",
    "predictions.png", "training_state.safetensors", "training_state.json",
}  # fmt: skip


def quick(out: Path, **overrides: object) -> TrainConfig:
    """A run of a few hundred digits: about a second per epoch on one core."""
    settings: dict[str, object] = {
        "model": "simple_cnn_bn", "data": "digits", "epochs": 2, "limit": 256,
        "batch_size": 32, "out": out, "progress": False, "augment": False,
    }  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


def weights_of(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "weights.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights_of(a), weights_of(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def test_trained_run_holds_every_file(trained_run: Path) -> None:
    assert {p.name for p in trained_run.iterdir()} >= RUN_FILES
    assert not [p.name for p in trained_run.iterdir() if p.name.endswith(".tmp")]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert 0.9 <= metrics["test_accuracy"] <= 1.0 and metrics["test_count"] == 359
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for entry in metrics["history"]:
        assert 0.0 <= entry["val_accuracy"] <= 1.0 and entry["train_loss"] > 0
    assert set(metrics["per_class_accuracy"]) == {str(d) for d in range(10)}
    card = ModelCard.load(trained_run / "card.json")
    assert (card.architecture, card.input_shape, card.mean, card.std) == (
        "simple_cnn_bn", (1, 32, 32), (0.5,), (0.5,),
    )  # fmt: skip
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"] == "simple_cnn_bn" and config["data"] == "digits"
    assert config["resolved"]["augmentation"] == {
        "hflip": False,
        "rotation": 0.0,
        "crop_scale": 1.0,
    }
    assert config["versions"]["torch"].startswith("2.")
    for png in ("curves.png", "predictions.png"):
        with Image.open(trained_run / png) as image:
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 150
    assert (trained_run / "weights.safetensors").read_bytes()[8:9] == b"{"  # safetensors header


def test_checkpoint_reproduces_the_test_accuracy(trained_run: Path) -> None:
    from edgeport.train.data import load_eval_arrays

    checkpoint = load_checkpoint(trained_run)
    assert not checkpoint.model.training
    assert all(
        p.dtype == torch.float32 and p.device.type == "cpu" for p in checkpoint.model.parameters()
    )
    arrays = load_eval_arrays("digits", checkpoint.card)
    with torch.no_grad():
        predicted = checkpoint.model(torch.from_numpy(arrays.images)).argmax(1).numpy()
    accuracy = float((predicted == arrays.labels).mean())
    assert accuracy == pytest.approx(checkpoint.metrics["test_accuracy"], abs=1e-9)
    assert checkpoint.dataset == "digits" and checkpoint.run_dir == trained_run


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    first = train(quick(tmp_path / "a", seed=7))
    second = train(quick(tmp_path / "b", seed=7))
    assert_same_weights(first, second)
    third = train(quick(tmp_path / "c", seed=8, epochs=1))
    assert not torch.equal(
        weights_of(first)["features.conv1.weight"], weights_of(third)["features.conv1.weight"]
    )


def test_resume_continues_to_the_same_weights(tmp_path: Path) -> None:
    # Augmentation and dropout both draw from the RNG, so this checks its state is restored.
    settings = {"model": "simple_cnn_dropout", "optimizer": "sgd", "lr": 0.05, "augment": None}
    straight = train(quick(tmp_path / "straight", **settings))
    partial = train(quick(tmp_path / "partial", **settings, epochs=1))
    # Simulate a crash after epoch 1's state was saved but before the final files.
    for name in ("metrics.json", "weights.safetensors", "card.json"):
        (partial / name).unlink()
    with pytest.raises(ConfigError, match="holds an interrupted run; continue it with --resume"):
        train(quick(partial, **settings))
    config = load_train_config(partial)
    config.epochs, config.resume = 2, partial
    assert train(config) == partial
    assert_same_weights(straight, partial)
    history = json.loads((partial / "metrics.json").read_text())["history"]
    reference = json.loads((straight / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    for mine, theirs in zip(history, reference, strict=True):
        assert mine["train_loss"] == theirs["train_loss"]
        assert mine["val_accuracy"] == theirs["val_accuracy"]


def test_resume_refuses_other_settings_and_missing_state(tmp_path: Path) -> None:
    run = train(quick(tmp_path / "run", epochs=1))
    config = load_train_config(run)
    config.resume, config.lr = run, 0.5
    with pytest.raises(ConfigError, match=r"cannot resume .* \(lr: run has 0.001, asked 0.5\)"):
        train(config)
    with pytest.raises(ConfigError, match=f"{tmp_path / 'none' / 'config.json'} not found"):
        train(TrainConfig(resume=tmp_path / "none"))


def test_out_dir_guards(tmp_path: Path) -> None:
    run = train(quick(tmp_path / "run", epochs=1))
    with pytest.raises(
        ConfigError, match="already holds a finished run; continue it with --resume"
    ):
        train(quick(run, epochs=1))
    before = (run / "weights.safetensors").read_bytes()
    train(quick(run, epochs=1, seed=3, overwrite=True))
    assert (run / "weights.safetensors").read_bytes() != before
    with pytest.raises(ConfigError, match=r"TrainConfig.out \(--out RUN_DIR\) is required"):
        train(TrainConfig())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1, got 0"),
        ({"optimizer": "lamb"}, "optimizer must be one of adam, sgd, got 'lamb'"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"model": "lenet"}, "unknown model 'lenet'; available: resnet18, simple_cnn"),
        ({"data": "mnist"}, "unknown dataset 'mnist'; available: cifar10, digits, imagefolder"),
    ],
)
def test_bad_settings(tmp_path: Path, overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train(quick(tmp_path / "run", **overrides))
    assert not (tmp_path / "run" / "weights.safetensors").exists()


def test_imagefolder_without_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="imagefolder needs --data-root"):
        train(quick(tmp_path / "run", data="imagefolder"))


def test_freeze_backbone_changes_only_the_head(tmp_path: Path) -> None:
    run = train(quick(tmp_path / "run", model="simple_cnn", freeze_backbone=True, epochs=1))
    torch.manual_seed(0)  # the loop seeds before building, so the initial weights are these
    from edgeport.train.models import build_model

    initial = build_model("simple_cnn", num_classes=10, in_channels=1, input_size=(32, 32))
    trained = weights_of(run)
    assert torch.equal(trained["features.conv1.weight"], initial.features.conv1.weight)
    assert not torch.equal(trained["classifier.fc2.weight"], initial.classifier.fc2.weight)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == 64 * 8 * 8 * 128 + 128 + 128 * 10 + 10


@pytest.mark.slow
def test_interrupted_process_resumes(tmp_path: Path) -> None:
    """Kill `edgeport train` with SIGINT after its first epoch; --resume finishes the run with
    the same weights as an uninterrupted one."""
    args = ["--model", "simple_cnn_bn", "--data", "digits", "--epochs", "4", "--seed", "1"]
    args += ["--limit", "400"]  # augmentation stays on: its RNG state must be restored too
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "edgeport.runtime.cli", "train"]
    run = tmp_path / "run"
    proc = subprocess.Popen([*cli, *args, "--out", str(run)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "training_state.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()[-2000:]
    state = json.loads((run / "training_state.json").read_text())
    assert 1 <= state["epoch"] < 4 and not (run / "metrics.json").exists()
    resumed = subprocess.run(
        [*cli, "--resume", str(run)], env=env, capture_output=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert b"test accuracy" in resumed.stdout
    straight = tmp_path / "straight"
    done = subprocess.run(
        [*cli, *args, "--out", str(straight)], env=env, capture_output=True, check=False
    )
    assert done.returncode == 0
    assert_same_weights(run, straight)
    shutil.rmtree(straight)


def test_per_class_accuracy_is_consistent(trained_run: Path) -> None:
    from edgeport.train.data import load_split

    metrics = json.loads((trained_run / "metrics.json").read_text())
    test = load_split("digits", "test")
    counts = np.bincount(test.labels, minlength=10)
    for name, accuracy in metrics["per_class_accuracy"].items():
        assert accuracy is not None and 0.0 <= accuracy <= 1.0
        assert round(accuracy * counts[int(name)]) == pytest.approx(
            accuracy * counts[int(name)], abs=1e-6
        )
