"""Preprocessing arithmetic, checked against values computed by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import InputError
from edgeport.runtime.preprocess import load_image, preprocess, to_channels


def card(channels: int = 3, size: tuple[int, int] = (2, 2)) -> ModelCard:
    return ModelCard(
        architecture="x",
        num_classes=2,
        class_names=("a", "b"),
        in_channels=channels,
        input_size=size,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
    )


def test_normalises_to_minus_one_one() -> None:
    image = np.array([[[0, 255, 51], [255, 0, 102]], [[0, 0, 0], [255, 255, 255]]], np.uint8)
    out = preprocess(image, card())
    assert out.shape == (1, 3, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [-1.0, 1.0, 51 / 255 * 2 - 1], rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 1, 1], [1.0, 1.0, 1.0])


def test_grayscale_rgba_and_files(tmp_path: Path) -> None:
    grey = np.full((4, 6), 255, np.uint8)
    assert to_channels(load_image(grey), 3).shape == (4, 6, 3)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0  # fully transparent: composited over black
    assert to_channels(load_image(rgba), 1).max() == 0
    path = tmp_path / "img.png"
    Image.fromarray(np.full((10, 20, 3), 128, np.uint8)).save(path)
    out = preprocess([path, path], card(channels=1, size=(5, 5)))
    assert out.shape == (2, 1, 5, 5)
    np.testing.assert_allclose(out, 128 / 255 * 2 - 1, atol=1e-6)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.zeros((2, 2, 2), np.uint8), r"C in \(1, 3, 4\), got shape \(2, 2, 2\)"),
        (np.full((2, 2), np.nan, np.float32), "NaN or Inf"),
        (np.full((2, 2), 3.0), r"values in \[0, 1\]"),
        (np.zeros((2, 2), np.int64), "uint8 or float"),
        (42, "got int"),
        ("/no/such/file.png", "image file not found"),
    ],
)
def test_bad_images_are_refused(value: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        preprocess(value, card())  # type: ignore[arg-type]


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(bad)


def test_pil_palette_and_grey_alpha_images() -> None:
    palette = Image.fromarray(np.full((3, 3), 7, np.uint8)).convert("P")
    assert load_image(palette).shape == (3, 3, 3)  # opaque: alpha dropped
    grey_alpha = Image.fromarray(np.full((3, 3, 2), 200, np.uint8), mode="LA")
    assert load_image(grey_alpha).shape == (3, 3, 4)  # translucent: alpha kept for compositing
