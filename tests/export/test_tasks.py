"""The runtime's numpy post-processing (edgeport.runtime.tasks) against torchvision's own ops."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms as torch_batched_nms

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, ModelLoadError
from edgeport.runtime.tasks import (
    SSDSettings,
    batched_nms,
    decode_boxes,
    detections,
    label_maps,
    resize_labels,
)

OUTPUTS = {"boxes": "b", "scores": "s", "anchors": "a"}


def random_boxes(rng: np.random.Generator, count: int, size: float = 100.0) -> np.ndarray:
    corners = rng.uniform(0, size, (count, 2))
    sides = rng.uniform(2, size / 3, (count, 2))
    return np.concatenate([corners, corners + sides], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
def test_batched_nms_equals_torchvision(seed: int) -> None:
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, 600)
    scores = rng.random(600).astype(np.float32)
    labels = rng.integers(0, 4, 600)
    expected = torch_batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), 0.5
    ).numpy()
    assert np.array_equal(batched_nms(boxes, scores, labels, 0.5), expected)
    assert np.array_equal(batched_nms(boxes, scores, labels, 0.5, max_keep=7), expected[:7])


def test_decode_equals_torchvisions_box_coder() -> None:
    rng = np.random.default_rng(0)
    anchors = random_boxes(rng, 200)
    codes = rng.normal(0, 3, (200, 4)).astype(np.float32)
    codes[0, 2:] = 50.0  # clipped by bbox_xform_clip
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    expected = coder.decode_single(torch.from_numpy(codes), torch.from_numpy(anchors)).numpy()
    settings = SSDSettings(OUTPUTS, bbox_xform_clip=math.log(1000.0 / 16))
    decoded = decode_boxes(codes, anchors, settings)
    np.testing.assert_allclose(decoded, expected, rtol=1e-6, atol=1e-4)  # float32 rounding


def test_label_maps_resize_by_nearest_pixel_centres() -> None:
    labels = np.arange(6).reshape(2, 3)
    assert np.array_equal(resize_labels(labels, (4, 6)), np.repeat(np.repeat(labels, 2, 0), 2, 1))
    assert np.array_equal(resize_labels(labels, (2, 3)), labels)
    card = ModelCard("seg", 3, ("a", "b", "c"), task="segmentation")
    logits = np.zeros((1, 3, 2, 3), np.float32)
    logits[0, 2, 0, 0] = 1.0
    (out,) = label_maps({"out": logits}, card, [(4, 6)])
    assert out.shape == (4, 6) and out[:2, :2].tolist() == [[2, 2], [2, 2]] and out.sum() == 8


def ssd_card(**postprocess: object) -> ModelCard:
    settings = {"kind": "ssd", "outputs": OUTPUTS, **postprocess}
    return ModelCard(
        "ssd", 3, ("bg", "cat", "dog"), 3, (10, 10), (0.5,) * 3, (0.5,) * 3,
        task="detection", postprocess=settings,
    )  # fmt: skip


def test_detections_threshold_nms_and_rescale() -> None:
    anchors = np.array([[0, 0, 4, 4], [0.2, 0, 4.2, 4], [5, 5, 9, 9]], np.float32)
    logits = np.log(np.array([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.05, 0.05, 0.9]], np.float32))
    outputs = {"b": np.zeros((1, 3, 4), np.float32), "s": logits[None], "a": anchors[None]}
    (found,) = detections(outputs, ssd_card(score_thresh=0.15, nms_thresh=0.5), [(20, 40)])
    assert found.labels.tolist() == [2, 1, 2]  # the second cat box is suppressed by the first
    np.testing.assert_allclose(found.scores, [0.9, 0.8, 0.2], rtol=1e-5)
    np.testing.assert_allclose(found.boxes[0], [20, 10, 36, 18])  # x * 4, y * 2
    assert found.names == ("dog", "cat", "dog") and len(found) == 3
    (strict,) = detections(outputs, ssd_card(score_thresh=0.15), [(10, 10)], score_threshold=0.85)
    assert strict.labels.tolist() == [2] and strict.to_dict()["names"] == ["dog"]


def test_cards_without_ssd_settings_are_refused() -> None:
    classifier = ModelCard("c", 2, ("a", "b"))
    with pytest.raises(ConfigError, match=r"Model\.detect runs SSD detectors"):
        SSDSettings.from_card(classifier)
    with pytest.raises(ModelLoadError, match=r"malformed \(unknown \['iou'\]"):
        SSDSettings.from_card(ssd_card(iou=0.5))
    with pytest.raises(ConfigError, match=r"Model\.segment runs segmentation models"):
        label_maps({"out": np.zeros((1, 2, 2, 2))}, classifier, [(2, 2)])
