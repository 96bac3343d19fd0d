"""The headline training runs (slow: each trains for real on the 1797 digits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeport.train.loop import TrainConfig, train

pytestmark = pytest.mark.slow


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_simple_cnn_bn_reaches_97_percent_in_8_epochs(tmp_path: Path) -> None:
    """`edgeport train --model simple_cnn_bn --data digits --epochs 8`, with the defaults."""
    run = train(
        TrainConfig(model="simple_cnn_bn", data="digits", epochs=8, out=tmp_path, progress=False)
    )
    metrics = metrics_of(run)
    assert metrics["test_accuracy"] >= 0.97, metrics["history"]
    assert len(metrics["history"]) == 8
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]


@pytest.mark.parametrize(
    ("model", "epochs", "floor"),
    [("simple_cnn", 3, 0.9), ("simple_cnn_dropout", 3, 0.9)],
)
def test_article_cnns_train_on_digits(
    tmp_path: Path, model: str, epochs: int, floor: float
) -> None:
    run = train(
        TrainConfig(
            model=model, data="digits", epochs=epochs, augment=False, out=tmp_path, progress=False
        )
    )
    assert metrics_of(run)["test_accuracy"] >= floor


def test_resnet18_with_frozen_backbone_trains_on_digits(tmp_path: Path) -> None:
    """Only the head (5130 parameters) trains on a random, frozen ResNet-18 backbone: far
    above chance (10%), though below a CNN trained end to end."""
    run = train(
        TrainConfig(
            model="resnet18", data="digits", epochs=3, freeze_backbone=True, augment=False,
            out=tmp_path, progress=False,
        )
    )  # fmt: skip
    metrics = metrics_of(run)
    assert metrics["trainable_parameters"] == 512 * 10 + 10
    assert metrics["test_accuracy"] >= 0.5, metrics["history"]
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["input_size"] == [32, 32]  # digits' size, not ResNet's 224
