"""Preprocessing arithmetic, checked against values computed by hand."""

from __future__ import annotations

import struct
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
        (np.zeros((2, 2), np.int64), "uint8, uint16 or float"),
        (42, "got int"),
        ("/no/such/file.png", "image file not found"),
        ("/", "is a directory"),
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


def test_a_tiff_whose_strip_offsets_are_a_rational(tmp_path: Path) -> None:
    """Found by `make fuzz`: Pillow raises TypeError on a TIFF tag of the wrong type."""
    good = tmp_path / "good.tiff"
    Image.fromarray(np.zeros((1, 8), np.uint8), mode="L").save(good, format="TIFF")
    data = bytearray(good.read_bytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets: LONG -> RATIONAL
            struct.pack_into("<H", data, entry + 2, 5)
    bad = tmp_path / "bad.tiff"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"cannot read image .*bad\.tiff: TypeError"):
        load_image(bad)


def test_pil_palette_and_grey_alpha_images() -> None:
    palette = Image.fromarray(np.full((3, 3), 7, np.uint8)).convert("P")
    assert load_image(palette).shape == (3, 3, 3)  # opaque: alpha dropped
    grey_alpha = Image.fromarray(np.full((3, 3, 2), 200, np.uint8), mode="LA")
    assert load_image(grey_alpha).shape == (3, 3, 4)  # translucent: alpha kept for compositing


# -- every Pillow mode scaled to the card's range, checked against hand-computed tensors ---------


def _grey_card(value_range: tuple[float, float] = (0.0, 1.0)) -> ModelCard:
    return ModelCard(
        architecture="x",
        num_classes=2,
        class_names=("a", "b"),
        in_channels=1,
        input_size=(2, 2),
        mean=(0.0,),
        std=(1.0,),
        value_range=value_range,
    )


def _png(tmp_path: Path, image: Image.Image, name: str) -> Path:
    path = tmp_path / name
    image.save(path)
    return path


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257], [32896, 65535]], np.uint16)  # 0, 1, 128, 255 in 8 bits
    path = _png(tmp_path, Image.fromarray(values), "grey16.png")
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # Pillow keeps the 16 bits
    out = preprocess(path, _grey_card())
    np.testing.assert_allclose(out[0, 0], [[0, 1 / 255], [128 / 255, 1.0]], rtol=1e-6)
    # the card's value range applies after the scaling: [-1, 1] here
    out = preprocess(path, _grey_card((-1.0, 1.0)))
    np.testing.assert_allclose(out[0, 0], [[-1, -1 + 2 / 255], [-1 + 256 / 255, 1.0]], atol=1e-6)


def test_uint16_arrays_and_32_bit_integer_images() -> None:
    out = preprocess(np.array([[0, 65535], [257, 514]], np.uint16), _grey_card())
    np.testing.assert_allclose(out[0, 0], [[0, 1], [1 / 255, 2 / 255]], rtol=1e-6)
    as_int32 = Image.fromarray(np.array([[0, 65535], [257, 514]], np.int32), mode="I")
    np.testing.assert_array_equal(preprocess(as_int32, _grey_card()), out)
    too_big = Image.fromarray(np.array([[0, 70000], [0, 0]], np.int32), mode="I")
    with pytest.raises(InputError, match=r"32-bit integer image with values in \[0, 70000\]"):
        load_image(too_big)


def test_float_images_hold_zero_to_one(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    path = _png(tmp_path, Image.fromarray(values, mode="F"), "float.tiff")
    np.testing.assert_allclose(
        preprocess(path, _grey_card())[0, 0], np.round(values * 255) / 255, rtol=1e-6
    )
    with pytest.raises(InputError, match=r"values in \[0, 1\], got \[0, 2\]"):
        load_image(Image.fromarray(values * 2, mode="F"))


def test_bilevel_palette_and_cmyk_images(tmp_path: Path) -> None:
    bilevel = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    np.testing.assert_allclose(preprocess(bilevel, _grey_card())[0, 0], [[0, 1], [1, 0]])
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 1 = pure red
    palette.putpixel((1, 0), 1)
    path = _png(tmp_path, palette, "palette.png")
    rgb = preprocess(path, card(channels=3))  # mean 0.5 std 0.5: 0 -> -1, 255 -> 1
    np.testing.assert_allclose(rgb[0, :, 0, 1], [1, -1, -1])
    np.testing.assert_allclose(rgb[0, :, 1, 1], [-1, -1, -1])
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))  # no ink: white
    np.testing.assert_allclose(preprocess(cmyk, card(channels=3)), 1.0)


def _header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (1-bit grey) with no real pixel data:
    enough for a decoder to read the size, as a decompression bomb would be."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])
def test_huge_images_are_refused_from_their_header(tmp_path: Path, side: int) -> None:
    path = tmp_path / f"bomb{side}.png"
    path.write_bytes(_header_only_png(side, side))
    assert path.stat().st_size < 1000
    with pytest.raises(InputError, match=rf"{side * side:,} pixels, above the limit"):
        load_image(path)


def test_the_pixel_limit_can_be_raised(tmp_path: Path) -> None:
    from edgeport.runtime import preprocess as module

    image = np.zeros((100, 100), np.uint8)
    try:
        module.set_max_image_pixels(5_000)
        with pytest.raises(InputError, match="100x100 = 10,000 pixels"):
            load_image(image)
        module.set_max_image_pixels(10_000)
        assert load_image(image).shape == (100, 100, 1)
    finally:
        module.set_max_image_pixels(module.MAX_IMAGE_PIXELS)
    with pytest.raises(InputError, match="positive integer"):
        module.set_max_image_pixels(0)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "image.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(fifo)
