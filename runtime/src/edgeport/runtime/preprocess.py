"""Raw images to the model's input tensor, exactly as the model card says.

Training uses these same functions for its deterministic steps (channel conversion, resize,
scaling, normalisation), so an image classified on the device goes through the same arithmetic
as it did during training. numpy does the arithmetic; Pillow, when installed, decodes files and
resizes.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    EdgeportError,
    InputError,
    ModelLoadError,
)
from edgeport.runtime.io import read_regular_file

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageLike = Union[str, Path, np.ndarray, "PILImage.Image"]


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise BackendUnavailable(
            "reading image files and resizing need Pillow: pip install 'edgeport-runtime[images]'"
        ) from exc
    return Image


MAX_IMAGE_PIXELS = 40_000_000  # 40 megapixels; set_max_image_pixels raises it
MAX_IMAGE_FILE_BYTES = 256 << 20
_limit = {"pixels": MAX_IMAGE_PIXELS}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def set_max_image_pixels(pixels: int) -> None:
    """Raise (or lower) the largest image, in pixels, that is decoded: larger files are refused
    from their header, before any pixel is decoded (``edgeport predict --max-image-pixels``)."""
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 1:
        raise InputError(f"the image pixel limit must be a positive integer, got {pixels!r}")
    _limit["pixels"] = pixels
    image_mod = _pil()
    if image_mod.MAX_IMAGE_PIXELS is not None and pixels > image_mod.MAX_IMAGE_PIXELS:
        image_mod.MAX_IMAGE_PIXELS = pixels  # Pillow's own bomb check, process-wide


def image_files(paths: Iterable[str | Path], *, recursive: bool = False) -> list[Path]:
    """Image files (by suffix) of the given files and folders (with ``recursive``, of their
    sub-folders too), sorted per folder; files named directly are kept whatever their suffix. A
    missing path or a folder without images raises ``ConfigError``."""
    out: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            listed = item.rglob("*") if recursive else item.iterdir()
            found = sorted(p for p in listed if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                where = " or its sub-folders" if recursive else ""
                raise ConfigError(
                    f"{item}{where} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            out += found
        elif item.is_file():
            out.append(item)
        else:
            raise ConfigError(f"image file or folder not found: {item}")
    return out


def load_image(source: ImageLike) -> np.ndarray:
    """Return a uint8 HWC array (C = 1, 3 or 4) from a path, a PIL image or an array.

    Arrays may be HW (grayscale) or HWC with 1, 3 or 4 channels: uint8, uint16 (scaled by
    255/65535) or float in [0, 1]. Files are decoded only after their header shows a size
    within the pixel limit; 16-bit, 32-bit integer (values 0..65535) and float (0..1) images
    are scaled to 8 bits, palette, bilevel and other colour spaces converted to RGB(A) or grey.
    """
    if isinstance(source, str | Path):
        return _read_image_file(Path(source))
    if isinstance(source, np.ndarray):
        return _array_image(source)
    if hasattr(source, "mode") and hasattr(source, "convert"):  # a PIL image
        _check_pixels(source.size, "image")
        return _array_image(_pil_pixels(source))
    raise InputError(
        "expected an image as a file path, a PIL image or a numpy array, got "
        f"{type(source).__name__}"
    )


def _check_pixels(size: tuple[int, int], what: str) -> None:
    width, height = size
    if width * height > _limit["pixels"]:
        raise InputError(
            f"{what} is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{_limit['pixels']:,}; refusing to decode it (raise the limit with "
            "edgeport.runtime.preprocess.set_max_image_pixels or --max-image-pixels)"
        )


def _read_image_file(path: Path) -> np.ndarray:
    try:
        data = read_regular_file(path, what="image file", max_bytes=MAX_IMAGE_FILE_BYTES)
    except ModelLoadError as exc:
        raise InputError(str(exc)) from exc
    return decode_image(data, f"image {path}")


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """A uint8 HWC array from an encoded image (PNG, JPEG, ...), as :func:`load_image` reads
    files: the pixel limit is checked from the header before any pixel is decoded. ``what``
    names the image in errors."""
    image_mod = _pil()
    try:
        with warnings.catch_warnings():  # the pixel limit below decides, not Pillow's warning
            warnings.simplefilter("ignore", image_mod.DecompressionBombWarning)
            with image_mod.open(io.BytesIO(data)) as img:  # reads the header only
                _check_pixels(img.size, what)
                img.load()
                return _array_image(_pil_pixels(img))
    except image_mod.DecompressionBombError as exc:  # above twice Pillow's own limit
        match = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(match.group(1)):,} pixels" if match else "too many pixels"
        raise InputError(
            f"{what} is {pixels}, above the limit of {_limit['pixels']:,}; refusing to "
            "decode it (raise the limit with --max-image-pixels)"
        ) from exc
    except EdgeportError:
        raise
    except Exception as exc:  # a decoder meets untrusted bytes: any failure is a damaged file
        # (Pillow raises OSError, SyntaxError and ValueError, and also TypeError where a
        # damaged TIFF tag has the wrong type)
        raise InputError(f"cannot read {what}: {type(exc).__name__}: {exc}") from exc


def _pil_pixels(img: Any) -> np.ndarray:
    """The pixels of a PIL image as an array in a mode ``_array_image`` takes (uint8 grey, RGB
    or RGBA; uint16; float32 in [0, 1])."""
    mode = img.mode
    if mode in _SIXTEEN_BIT:
        return np.asarray(img).astype(np.uint16)
    if mode == "I":
        values = np.asarray(img)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise InputError(
                f"32-bit integer image with values in [{values.min()}, {values.max()}]; edgeport "
                "reads integer images of 0..65535 (16-bit): convert it to 8 or 16 bits first"
            )
        return values.astype(np.uint16)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)
    if mode in ("1", "L", "RGB", "RGBA"):
        return np.asarray(img.convert("L") if mode == "1" else img)
    if mode in ("P", "PA", "LA", "La", "RGBa"):
        img = img.convert("RGBA")
        if img.getchannel("A").getextrema() == (255, 255):
            img = img.convert("RGB")
        return np.asarray(img)
    if mode in _TO_RGB:
        return np.asarray(img.convert("RGB"))
    raise InputError(f"unsupported image mode {mode!r}; convert the image to RGB or L first")


def _array_image(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(
            f"expected an image array of shape HxW or HxWxC with C in (1, 3, 4), "
            f"got shape {array.shape}"
        )
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(f"image has an empty side: shape {array.shape}")
    _check_pixels((array.shape[1], array.shape[0]), "image array")
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:  # round(v * 255 / 65535) without float error
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError("image array contains NaN or Inf")
        if array.min() < 0.0 or array.max() > 1.0:
            raise InputError(
                f"float image arrays must hold values in [0, 1], got "
                f"[{array.min():.3g}, {array.max():.3g}]"
            )
        return np.round(array * 255.0).astype(np.uint8)
    raise InputError(
        f"image arrays must be uint8, uint16 or float in [0, 1], got dtype {array.dtype}"
    )


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Convert a uint8 HWC image to 1 (luma, ITU-R 601-2 as Pillow) or 3 channels (RGB).

    Alpha is composited over black, as dropping it would reveal arbitrary colour data.
    """
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        image = np.round(image[:, :, :3].astype(np.float32) * alpha).astype(np.uint8)
    have = image.shape[2]
    if have == channels:
        return image
    if channels == 3:  # grey to RGB
        return np.repeat(image, 3, axis=2)
    if channels == 1:
        rgb = image.astype(np.float32)
        luma = rgb[:, :, 0] * 0.299 + rgb[:, :, 1] * 0.587 + rgb[:, :, 2] * 0.114
        return np.clip(np.round(luma), 0, 255).astype(np.uint8)[:, :, None]
    raise InputError(f"cannot convert an image to {channels} channels; expected 1 or 3")


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """Resize a uint8 HWC image to ``size`` = (height, width) with Pillow's filters."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    image_mod = _pil()
    filters = {
        "nearest": image_mod.Resampling.NEAREST,
        "bilinear": image_mod.Resampling.BILINEAR,
        "bicubic": image_mod.Resampling.BICUBIC,
    }
    channels = image.shape[2]
    pil = image_mod.fromarray(image[:, :, 0] if channels == 1 else image)
    out = np.asarray(pil.resize((width, height), filters[interpolation]))
    return out[:, :, None] if out.ndim == 2 else out


def normalize(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """uint8 NHWC (or HWC) to float32 NCHW (or CHW): scale to ``value_range``, then (x-mean)/std."""
    if images.dtype != np.uint8:
        raise InputError(f"normalize expects uint8 pixels, got {images.dtype}")
    low, high = card.value_range
    scaled = images.astype(np.float32) * np.float32((high - low) / 255.0) + np.float32(low)
    mean = np.asarray(card.mean, dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(card.std, dtype=np.float32)
    normed = (scaled - mean) * inv_std
    axes = (0, 3, 1, 2) if normed.ndim == 4 else (2, 0, 1)
    return np.ascontiguousarray(normed.transpose(axes), dtype=np.float32)


def prepare_image(source: ImageLike, card: ModelCard) -> np.ndarray:
    """One raw image to a uint8 HWC array with the card's channels and size (no scaling yet)."""
    channels, height, width = card.input_shape
    image = to_channels(load_image(source), channels)
    return resize(image, (height, width), card.interpolation)


def preprocess(
    images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike], card: ModelCard
) -> np.ndarray:
    """Raw images (one or many) to the float32 NCHW batch the model takes."""
    if isinstance(images, str | Path | np.ndarray) or hasattr(images, "mode"):
        images = [images]  # type: ignore[list-item]
    if not isinstance(images, Iterable):
        raise InputError(
            "expected an image (path, PIL image or array) or a sequence of them, got "
            f"{type(images).__name__}"
        )
    batch = [prepare_image(img, card) for img in images]
    if not batch:
        raise InputError("expected at least one image, got none")
    return normalize(np.stack(batch), card)
