"""Raw images to the model's input tensor, exactly as the model card says.

Training uses these same functions for its deterministic steps (channel conversion, resize,
scaling, normalisation), so an image classified on the device goes through the same arithmetic
as it did during training. numpy does the arithmetic; Pillow, when installed, decodes files and
resizes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import BackendUnavailable, InputError

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


def load_image(source: ImageLike) -> np.ndarray:
    """Return a uint8 HWC array (C = 1, 3 or 4) from a path, a PIL image or an array.

    Arrays may be HW (grayscale) or HWC with 1, 3 or 4 channels, as uint8 or as float in [0, 1].
    """
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"image file not found: {path}")
        image_mod = _pil()
        try:
            with image_mod.open(path) as img:
                img.load()
                return load_image(img)
        except (OSError, SyntaxError) as exc:  # PIL raises these for corrupt or unknown files
            raise InputError(f"cannot read image {path}: {exc}") from exc
    if isinstance(source, np.ndarray):
        return _array_image(source)
    if hasattr(source, "mode") and hasattr(source, "convert"):  # a PIL image
        img = source
        if img.mode in ("1", "P", "LA", "I", "I;16", "F", "CMYK", "YCbCr", "HSV"):
            img = img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB")
            if img.mode == "RGBA" and img.getchannel("A").getextrema() == (255, 255):
                img = img.convert("RGB")
        return _array_image(np.asarray(img))
    raise InputError(
        "expected an image as a file path, a PIL image or a numpy array, got "
        f"{type(source).__name__}"
    )


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
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError("image array contains NaN or Inf")
        if array.min() < 0.0 or array.max() > 1.0:
            raise InputError(
                f"float image arrays must hold values in [0, 1], got "
                f"[{array.min():.3g}, {array.max():.3g}]"
            )
        return np.round(array * 255.0).astype(np.uint8)
    raise InputError(f"image arrays must be uint8 or float in [0, 1], got dtype {array.dtype}")


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
