"""Run directories damaged the way an adversary (or a crash) could: each file a run holds ends in
a typed error naming it, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError, ModelLoadError
from edgeport.train.checkpoint import load_checkpoint, load_training_state
from edgeport.train.loop import TrainConfig, load_train_config


def _copy(run: Path, tmp_path: Path) -> Path:
    return shutil.copytree(run, tmp_path / "run")


@pytest.mark.parametrize(
    ("config", "pattern"),
    [
        ([1], r"a training config must be a JSON object, got list"),
        ({"epochs": "8"}, r"Expected `int`, got `str` - at `\$\.epochs`"),
        ({"lr": [0.1]}, r"Expected `float`, got `array` - at `\$\.lr`"),
        ({"out": 5}, r"Expected a path string, got `int` - at `\$\.out`"),
        ({"input_size": [32, 32, 32]}, r"Expected `array` of length 2"),
    ],
)
def test_resume_with_a_config_of_the_wrong_shape(
    trained_run: Path,
    tmp_path: Path,
    config: object,
    pattern: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = _copy(trained_run, tmp_path)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=pattern):
        load_train_config(run)
    assert main(["train", "--resume", str(run)]) == 1
    assert "error: cannot resume" in capsys.readouterr().err


def test_resume_with_a_fifo_config(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    (run / "config.json").unlink()
    os.mkfifo(run / "config.json")
    with pytest.raises(ConfigError, match=r"not a regular file"):
        load_train_config(run)


def test_a_config_round_trips(trained_run: Path) -> None:
    config = load_train_config(trained_run)
    assert isinstance(config.out, Path) and config.epochs == 2
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (lambda d: d.update(epoch="2"), r"Expected `int`, got `str` - at `\$\.epoch`"),
        (lambda d: d.update(optimizer_scalars=[1]), r"got `array` - at `\$\.optimizer_scalars`"),
        (lambda d: d.pop("optimizer_param_groups"), r"missing required field"),
        (lambda d: d.update(optimizer_scalars={"x": {}}), r"keyed by parameter index"),
    ],
)
def test_a_damaged_training_state(
    trained_run: Path, tmp_path: Path, edit: object, pattern: str
) -> None:
    run = _copy(trained_run, tmp_path)
    path = run / "training_state.json"
    document = json.loads(path.read_text())
    edit(document)  # type: ignore[operator]
    path.write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match=pattern):
        load_training_state(run)


def test_a_card_declaring_a_huge_input(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    card = json.loads((run / "card.json").read_text())
    card["input_size"] = [100000, 100000]
    (run / "card.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match=r"input_size must be .* each in 1\.\.8192"):
        load_checkpoint(run)


def test_weights_that_are_a_fifo_or_truncated(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    weights = run / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match=r"not a readable safetensors file"):
        load_checkpoint(run)
    weights.unlink()
    os.mkfifo(weights)
    with pytest.raises(ModelLoadError, match=r"not a regular file"):
        load_checkpoint(run)
