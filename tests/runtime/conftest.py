"""Session fixtures for the runtime tests: tiny exact models, a small CNN, bundles, images.

Fixtures are shared and must not be modified by tests: copy a bundle before damaging it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs

from edgeport.runtime.card import ModelCard


@pytest.fixture(scope="session")
def gemm_bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32, fp16 and int8 gemm artifacts (1x2x2 input, 3 classes, batch 1:4:16), parity passed."""
    return rt_bundles.gemm_bundle(
        tmp_path_factory.mktemp("gemm") / "bundle", ("fp32", "fp16", "int8")
    )


@pytest.fixture(scope="session")
def cnn_card() -> ModelCard:
    return ModelCard(
        architecture="simple_cnn_bn",
        num_classes=10,
        class_names=tuple(str(i) for i in range(10)),
        in_channels=3,
        input_size=(32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


@pytest.fixture(scope="session")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory, cnn_card: ModelCard) -> Path:
    """A simple_cnn_bn-shaped classifier (3x32x32, 10 classes) with its card in the metadata."""
    path = tmp_path_factory.mktemp("cnn") / "simple_cnn_bn.onnx"
    return rt_graphs.save(rt_graphs.small_cnn(card=cnn_card), path)


@pytest.fixture(scope="session")
def cnn_bundle_dir(tmp_path_factory: pytest.TempPathFactory, cnn_card: ModelCard) -> Path:
    return rt_bundles.cnn_bundle(tmp_path_factory.mktemp("cnnb") / "bundle", cnn_card)


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three PNG files: grey, RGB and RGBA, of different sizes."""
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for name, mode, shape in (
        ("grey.png", "L", (9, 7)),
        ("rgb.png", "RGB", (40, 30, 3)),
        ("rgba.png", "RGBA", (2, 2, 4)),
    ):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        path = root / name
        Image.fromarray(pixels, mode=mode).save(path)
        paths.append(path)
    return paths
