"""Datasets: the embedded digits, splits, preprocessing shared with the runtime, augmentation."""

from __future__ import annotations

import gzip
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, DatasetError
from edgeport.runtime.preprocess import preprocess
from edgeport.train.data import (
    Augmentation,
    TrainingDataset,
    available_datasets,
    load_eval_arrays,
    load_split,
    read_digits,
    stratified_split,
)

DIGITS = tuple(str(d) for d in range(10))


def digits_card(channels: int = 1, size: tuple[int, int] = (32, 32)) -> ModelCard:
    return ModelCard(
        architecture="simple_cnn_bn",
        num_classes=10,
        class_names=DIGITS,
        in_channels=channels,
        input_size=size,
        mean=(0.5,) * channels,
        std=(0.5,) * channels,
    )


def test_digits_are_the_real_embedded_set() -> None:
    images, labels = read_digits()
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # First row of the CSV: 0,0,5,13,9,1,0,0 (values 0..16) -> round(x * 255 / 16).
    assert images[0, 0, :, 0].tolist() == [0, 0, 80, 207, 143, 16, 0, 0]
    assert labels[0] == 0 and images.max() == 255
    from importlib import resources

    raw = resources.files("edgeport.train").joinpath("assets", "digits.csv.gz").read_bytes()
    first = gzip.decompress(raw).decode().splitlines()[0].split(",")
    expected = np.round(np.array(first[:64], dtype=float) * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(images[0].ravel(), expected)


def test_splits_are_stratified_disjoint_and_fixed() -> None:
    splits = {s: load_split("digits", s) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 1295, "val": 143, "test": 359}
    for split in splits.values():
        counts = np.bincount(split.labels, minlength=10)
        assert counts.min() > 0.9 * counts.max() - 2  # every class about equally present
    # Disjoint and complete: compare images as bytes.
    seen = [
        img.tobytes() + bytes([lab])
        for s in splits.values()
        for img, lab in zip(s.arrays, s.labels, strict=True)
    ]
    images, labels = read_digits()
    every = sorted(img.tobytes() + bytes([lab]) for img, lab in zip(images, labels, strict=True))
    assert sorted(seen) == every
    again = load_split("digits", "test")
    np.testing.assert_array_equal(again.arrays, splits["test"].arrays)


def test_stratified_split_holds_out_each_class() -> None:
    labels = np.array([0] * 10 + [1] * 20 + [2] * 5)
    kept, held = stratified_split(labels, 0.2)
    assert np.bincount(labels[held]).tolist() == [2, 4, 1]
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(35))
    np.testing.assert_array_equal(held, stratified_split(labels, 0.2)[1])


def test_eval_arrays_match_the_runtime_preprocessing() -> None:
    card = digits_card()
    arrays = load_eval_arrays("digits", card, limit=16)
    raw8 = load_split("digits", "test").arrays[:16]
    assert arrays.images.shape == (16, 1, 32, 32) and arrays.images.dtype == np.float32
    assert arrays.labels.dtype == np.int64 and arrays.raw.shape == (16, 32, 32, 1)
    assert arrays.class_names == DIGITS
    # Exactly what the device does with the original 8x8 images.
    np.testing.assert_array_equal(arrays.images, preprocess(list(raw8), card))
    assert arrays.images.min() == -1.0 and arrays.images.max() == 1.0
    rgb = load_eval_arrays("digits", digits_card(channels=3, size=(16, 16)), limit=4)
    assert rgb.images.shape == (4, 3, 16, 16)
    np.testing.assert_array_equal(rgb.images[:, 0], rgb.images[:, 2])  # grey replicated


def test_eval_arrays_is_the_declared_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="edgeport.datasets") if e.name == "arrays"]
    assert ep.load() is load_eval_arrays


def test_dataset_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_split("mnist", "train")
    assert "unknown dataset 'mnist'; available: cifar10, digits, imagefolder" in str(info.value)
    assert available_datasets() == ["cifar10", "digits", "imagefolder"]
    with pytest.raises(ConfigError, match="unknown split 'dev'; available: train, val, test"):
        load_split("digits", "dev")
    wrong = ModelCard("x", 2, ("cat", "dog"), 1, (8, 8), (0.5,), (0.5,))
    with pytest.raises(ConfigError, match=r"classes \['cat', 'dog'\] differ from dataset 'digits'"):
        load_eval_arrays("digits", wrong)
    with pytest.raises(ConfigError, match="limit must be a positive number of images, got 0"):
        load_eval_arrays("digits", digits_card(), limit=0)
    with pytest.raises(DatasetError, match="imagefolder needs --data-root DIR"):
        load_split("imagefolder", "train")


def test_training_dataset_without_augmentation_is_the_eval_preprocessing() -> None:
    card = digits_card()
    dataset = TrainingDataset(load_split("digits", "test"), card)
    arrays = load_eval_arrays("digits", card)
    image, label = dataset[5]
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
    np.testing.assert_array_equal(image.numpy(), arrays.images[5])
    assert label == arrays.labels[5]


def test_augmentation_is_seeded_and_keeps_the_shape() -> None:
    card = digits_card()
    split = load_split("digits", "train")
    augmented = TrainingDataset(split, card, Augmentation(rotation=10.0, crop_scale=0.8))
    plain = TrainingDataset(split, card)
    torch.manual_seed(3)
    first = augmented[0][0]
    torch.manual_seed(3)
    second = augmented[0][0]
    assert first.shape == (1, 32, 32)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert not torch.equal(first, plain[0][0])
    assert first.min() >= -1.0 and first.max() <= 1.0


def test_horizontal_flip_mirrors() -> None:
    image = torch.arange(12, dtype=torch.uint8).reshape(1, 3, 4)
    flip = Augmentation(hflip=True).build((3, 4))
    outcomes = set()
    for seed in range(20):
        torch.manual_seed(seed)
        outcomes.add(tuple(flip(image)[0, 0].tolist()))
    assert outcomes == {(0, 1, 2, 3), (3, 2, 1, 0)}


def test_augmentation_limits() -> None:
    assert not Augmentation().enabled and Augmentation(rotation=5).enabled
    with pytest.raises(ConfigError, match=r"crop scale must be in \(0, 1\], got 1.5"):
        Augmentation(crop_scale=1.5)
    with pytest.raises(ConfigError, match=r"rotation must be in \[0, 180\] degrees, got -1"):
        Augmentation(rotation=-1)
