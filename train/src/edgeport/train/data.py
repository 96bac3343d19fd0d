"""Datasets: digits (embedded), CIFAR-10 and image folders, split and preprocessed per the card.

Every dataset is first a list of raw uint8 HWC images with labels (``RawSplit``). The
deterministic steps that turn a raw image into the model's input are the runtime's own
(``prepare_image``: channels and size; ``normalize``: scale and mean/std), so an image
classified on the device goes through the same arithmetic as in training. Augmentation
(``Augmentation``) runs between those two steps, at the model's input size, in training only.

Splits are fixed per dataset (they do not depend on the training seed): ``train``, ``val``
(10% of the training part, for per-epoch validation) and ``test``, each stratified by class
with numpy's legacy ``RandomState(0)``, whose stream numpy promises never to change.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, DatasetError, InputError
from edgeport.runtime.preprocess import load_image, normalize, prepare_image
from edgeport.train import cifar

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_DATA_ROOT = "~/.cache/edgeport/data"
# Cache prepared (resized) training images in memory when they fit in this many bytes.
CACHE_LIMIT_BYTES = 1 << 30

# The article's normalisation: ToTensor (to [0, 1]) then Normalize(0.5, 0.5), i.e. [-1, 1].
ARTICLE_MEAN = 0.5
ARTICLE_STD = 0.5
# ImageNet statistics, for pretrained weights; grey images use the mean of the three channels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_GREY_MEAN = (0.449,)
IMAGENET_GREY_STD = (0.226,)


@dataclass(frozen=True)
class Augmentation:
    """Random training-time transforms (the article's: flip, rotate 10 degrees, resized crop).

    ``rotation`` is the maximum angle in degrees (0 disables); ``crop_scale`` is the smallest
    area fraction of the random resized crop (1.0 disables).
    """

    hflip: bool = False
    rotation: float = 0.0
    crop_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation <= 180.0:
            raise ConfigError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ConfigError(f"crop scale must be in (0, 1], got {self.crop_scale}")

    @property
    def enabled(self) -> bool:
        return self.hflip or self.rotation > 0 or self.crop_scale < 1.0

    def to_dict(self) -> dict[str, Any]:
        return {"hflip": self.hflip, "rotation": self.rotation, "crop_scale": self.crop_scale}

    def build(self, size: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
        """A transform of one uint8 CHW tensor that keeps its ``size``; uses torch's RNG."""
        from torchvision.transforms import v2

        steps: list[Any] = []
        if self.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if self.rotation > 0:
            steps.append(
                v2.RandomRotation(self.rotation, interpolation=v2.InterpolationMode.BILINEAR)
            )
        if self.crop_scale < 1.0:
            steps.append(v2.RandomResizedCrop(size, scale=(self.crop_scale, 1.0), antialias=True))
        return v2.Compose(steps)


NO_AUGMENTATION = Augmentation()
ARTICLE_AUGMENTATION = Augmentation(hflip=True, rotation=10.0, crop_scale=0.8)


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset offers before it is read: its natural input and augmentation defaults."""

    name: str
    description: str
    in_channels: int
    input_size: tuple[int, int] | None  # None: the model's default size
    augmentation: Augmentation
    needs_root: bool = False


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits",
        "1797 handwritten 8x8 digits (UCI, as scikit-learn ships them), embedded",
        in_channels=1,
        # Upsampled 4x to 32x32, the size the article's CNN is designed for (two pools: 8x8x64).
        input_size=(32, 32),
        # No horizontal flip: a mirrored digit is another glyph (or none).
        augmentation=Augmentation(hflip=False, rotation=10.0, crop_scale=0.8),
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        "CIFAR-10, 60000 32x32 colour images in 10 classes, from --data-root",
        in_channels=3,
        input_size=(32, 32),
        augmentation=ARTICLE_AUGMENTATION,
    ),
    "imagefolder": DatasetSpec(
        "imagefolder",
        "your own PNG/JPEG images, one sub-folder per class, from --data-root",
        in_channels=3,
        input_size=None,
        augmentation=ARTICLE_AUGMENTATION,
        needs_root=True,
    ),
}


def available_datasets() -> list[str]:
    return sorted(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown dataset {name!r}; available: {', '.join(available_datasets())}"
        ) from None


def default_data_root() -> Path:
    return Path(os.environ.get("EDGEPORT_DATA", DEFAULT_DATA_ROOT)).expanduser()


def article_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (ARTICLE_MEAN,) * channels, (ARTICLE_STD,) * channels


def imagenet_normalization(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if channels == 1:
        return IMAGENET_GREY_MEAN, IMAGENET_GREY_STD
    return IMAGENET_MEAN, IMAGENET_STD


# --------------------------------------------------------------------------------------------
# Raw splits


@dataclass
class RawSplit:
    """One split before preprocessing: images in memory (uint8 NHWC) or as files."""

    name: str
    split: str
    labels: np.ndarray  # int64 (N,)
    class_names: tuple[str, ...]
    arrays: np.ndarray | None = None  # uint8 (N, H, W, C)
    files: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def image(self, index: int) -> np.ndarray:
        """Raw uint8 HWC image ``index``."""
        if self.arrays is not None:
            return self.arrays[index]
        path = self.files[index]
        try:
            return load_image(path)
        except InputError as exc:
            raise DatasetError(f"{self.name}: cannot read {path}: {exc}") from exc

    def prepared(self, card: ModelCard, indices: Sequence[int] | None = None) -> np.ndarray:
        """uint8 NHWC images after ``prepare_image`` (the card's channels and size)."""
        chosen = range(len(self)) if indices is None else indices
        channels, height, width = card.input_shape
        out = np.empty((len(chosen), height, width, channels), dtype=np.uint8)
        for row, index in enumerate(chosen):
            out[row] = prepare_image(self.image(index), card)
        return out


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out), both sorted, holding out ``round(fraction * n)`` of each class."""
    rng = np.random.RandomState(seed)
    held = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = round(fraction * len(members))
        held.append(rng.permutation(members)[:count])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    kept_idx = np.setdiff1d(np.arange(len(labels)), held_idx)
    return kept_idx.astype(np.int64), held_idx.astype(np.int64)


def _train_val(labels: np.ndarray, split: str) -> np.ndarray:
    """Indices of ``split`` ("train" or "val") within the training part ``labels``."""
    kept, held = stratified_split(labels, VAL_FRACTION, SPLIT_SEED + 1)
    return kept if split == "train" else held


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")


def load_split(
    name: str, split: str, *, data_root: str | Path | None = None, download: bool = False
) -> RawSplit:
    """The raw images and labels of one split of a dataset."""
    spec = dataset_spec(name)
    _check_split(split)
    if name == "digits":
        return _digits(split)
    if name == "cifar10":
        return _cifar10(
            split, Path(data_root).expanduser() if data_root else default_data_root(), download
        )
    if data_root is None:
        raise DatasetError(
            f"{spec.name} needs --data-root DIR: a folder with one sub-folder per class "
            "(DIR/cat/*.png, DIR/dog/*.jpg), or DIR/train/<class>/... and DIR/test/<class>/..."
        )
    return _imagefolder(Path(data_root).expanduser(), split)


def _select(
    name: str,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    idx: np.ndarray,
) -> RawSplit:
    return RawSplit(name, split, labels[idx], names, arrays=images[idx])


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as uint8 (N, 8, 8, 1) images (0..16 scaled by 255/16, rounded) + labels."""
    source = resources.files("edgeport.train").joinpath("assets", "digits.csv.gz")
    with source.open("rb") as raw, gzip.open(raw, "rt", encoding="ascii") as text:
        table = np.loadtxt(text, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65):
        raise DatasetError(f"embedded digits.csv.gz has shape {table.shape}, expected (1797, 65)")
    pixels, labels = table[:, :64], table[:, 64]
    images = np.round(pixels * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8, 1)
    return images, labels


def _digits(split: str) -> RawSplit:
    images, labels = read_digits()
    names = tuple(str(d) for d in range(10))
    rest, test = stratified_split(labels, TEST_FRACTION)
    if split == "test":
        return _select("digits", split, images, labels, names, test)
    return _select("digits", split, images, labels, names, rest[_train_val(labels[rest], split)])


def _cifar10(split: str, root: Path, download: bool) -> RawSplit:
    batch_dir = cifar.find_batch_dir(root, download=download)
    names = cifar.read_class_names(batch_dir)
    if split == "test":
        images, labels = cifar.read_images(batch_dir / cifar.TEST_BATCH)
        return RawSplit("cifar10", split, labels, names, arrays=images)
    parts = [cifar.read_images(batch_dir / b) for b in cifar.TRAIN_BATCHES]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return _select("cifar10", split, images, labels, names, _train_val(labels, split))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _scan_classes(root: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray]:
    """(class names, image files, labels) of a folder with one sub-folder per class."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files: list[Path] = []
    labels: list[int] = []
    for index, cls in enumerate(classes):
        found = _image_files(root / cls)
        files += found
        labels += [index] * len(found)
    return tuple(classes), files, np.asarray(labels, dtype=np.int64)


def _imagefolder(root: Path, split: str) -> RawSplit:
    """A split of ``root``: ``root/train|val|test/<class>`` as given (val split off train when
    absent), or ``root/<class>`` split like the other datasets."""
    if not root.is_dir():
        raise DatasetError(
            f"image folder not found: {root}; expected one sub-folder per class with PNG/JPEG files"
        )
    has_splits = (root / "train").is_dir() and (root / "test").is_dir()
    base = root / "train" if has_splits else root
    classes, files, labels = _scan_classes(base)
    empty = [c for i, c in enumerate(classes) if not np.any(labels == i)]
    if len(classes) < 2 or empty:
        raise DatasetError(
            f"{base} needs at least 2 class sub-folders each holding {'/'.join(IMAGE_SUFFIXES)} "
            f"files; found classes {list(classes)}"
            + (f", of which {empty} hold no images" if empty else "")
        )
    if has_splits:
        if split == "test" or (split == "val" and (root / "val").is_dir()):
            test_classes, files, labels = _scan_classes(root / split)
            if test_classes != classes:
                raise DatasetError(
                    f"{root / split} has classes {list(test_classes)}, "
                    f"but {base} has {list(classes)}"
                )
            return RawSplit("imagefolder", split, labels, classes, files=files)
        idx = _train_val(labels, split) if not (root / "val").is_dir() else np.arange(len(labels))
    else:
        rest, test = stratified_split(labels, TEST_FRACTION)
        idx = test if split == "test" else rest[_train_val(labels[rest], split)]
    return RawSplit("imagefolder", split, labels[idx], classes, files=[files[i] for i in idx])


# --------------------------------------------------------------------------------------------
# Evaluation arrays (the entry point `edgeport.datasets:arrays`)


@dataclass
class EvalArrays:
    """A split preprocessed exactly per a model card."""

    images: np.ndarray  # float32 NCHW, after prepare_image + normalize
    labels: np.ndarray  # int64 (N,)
    raw: np.ndarray  # uint8 NHWC after prepare_image (the card's channels and size)
    class_names: tuple[str, ...]


def check_classes(card: ModelCard, class_names: Sequence[str], dataset: str) -> None:
    """Refuse a dataset whose classes (names and order) differ from the model's."""
    if tuple(card.class_names) != tuple(class_names):
        raise ConfigError(
            f"the model's classes {list(card.class_names)} differ from dataset {dataset!r}'s "
            f"{list(class_names)}; evaluate on the dataset the model was trained on"
        )


def load_eval_arrays(
    name: str,
    card: ModelCard,
    *,
    split: str = "test",
    data_root: str | Path | None = None,
    limit: int | None = None,
    download: bool = False,
) -> EvalArrays:
    """The first ``limit`` images (all by default) of a split, preprocessed per ``card``."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of images, got {limit}")
    raw_split = load_split(name, split, data_root=data_root, download=download)
    check_classes(card, raw_split.class_names, name)
    count = len(raw_split) if limit is None else min(limit, len(raw_split))
    raw = raw_split.prepared(card, range(count))
    return EvalArrays(
        images=normalize(raw, card),
        labels=raw_split.labels[:count].copy(),
        raw=raw,
        class_names=raw_split.class_names,
    )


# --------------------------------------------------------------------------------------------
# torch datasets for training


class TrainingDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """A split as (float32 CHW tensor, label) pairs: prepare_image, [augment], normalize.

    Prepared images are cached in memory when they fit ``CACHE_LIMIT_BYTES``; without
    augmentation the whole split is normalised once.
    """

    def __init__(
        self, split: RawSplit, card: ModelCard, augmentation: Augmentation = NO_AUGMENTATION
    ) -> None:
        self.split = split
        self.card = card
        self.augmentation = augmentation
        channels, height, width = card.input_shape
        self._augment = augmentation.build((height, width)) if augmentation.enabled else None
        size = len(split) * height * width * channels
        self._prepared = split.prepared(card) if size <= CACHE_LIMIT_BYTES else None
        self._normalized: torch.Tensor | None = None
        if self._prepared is not None and self._augment is None:
            self._normalized = torch.from_numpy(normalize(self._prepared, card))
        self._labels = torch.from_numpy(split.labels)

    def __len__(self) -> int:
        return len(self.split)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (float32 NCHW images, int64 labels); for evaluation."""
        if self._normalized is not None:  # set only without augmentation
            return self._normalized, self._labels
        return torch.stack([self[i][0] for i in range(len(self))]), self._labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self._labels[index])
        if self._normalized is not None:
            return self._normalized[index], label
        image = (
            self._prepared[index]
            if self._prepared is not None
            else prepare_image(self.split.image(index), self.card)
        )
        if self._augment is not None:
            chw = self._augment(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
            image = chw.permute(1, 2, 0).numpy()
        return torch.from_numpy(normalize(np.ascontiguousarray(image), self.card)), label
