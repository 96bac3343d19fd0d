"""Session fixtures for training: one real run directory shared by every test that needs one.

``trained_run``: ``simple_cnn_bn`` trained for 2 epochs on the embedded digits (seed 0, no
augmentation, about 95% test accuracy) in a few seconds. Tests must not modify it: copy it
(``shutil.copytree``) before damaging it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TRAINED_RUN_EPOCHS = 2


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeport.train.loop import TrainConfig, train

    out = tmp_path_factory.mktemp("trained_run") / "run"
    return train(
        TrainConfig(
            model="simple_cnn_bn",
            data="digits",
            epochs=TRAINED_RUN_EPOCHS,
            seed=0,
            augment=False,
            out=out,
            progress=False,
        )
    )
