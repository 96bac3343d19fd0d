"""What detection and segmentation outputs mean, in numpy: the post-processing torchvision does
in PyTorch, run on the device from the settings in the model card's ``postprocess``.

- SSD detection (``postprocess["kind"] == "ssd"``): the raw head outputs (box regressions,
  class logits, default boxes) to boxes in the original image's pixels, as torchvision's
  ``SSD.postprocess_detections`` and ``GeneralizedRCNNTransform.postprocess`` do: decode with
  the BoxCoder weights, clip to the image, softmax, per class a score threshold and the top-k
  candidates, per-class NMS, the best ``detections_per_img``, rescale to the original size.
- Segmentation: per-pixel argmax over the class logits, resized back to the image's size
  (nearest neighbour) as a label map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, InputError, ModelLoadError
from edgeport.runtime.preprocess import ImageLike, load_image, normalize, prepare_image

Size = tuple[int, int]  # (height, width)
_F32 = np.float32


@dataclass(frozen=True)
class Detections:
    """The detections in one image, best first: ``boxes`` [K, 4] (x1, y1, x2, y2) in the
    original image's pixels, ``scores`` [K], ``labels`` [K] (class indices) and their names."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.scores)

    def to_dict(self) -> dict[str, Any]:
        return {
            "boxes": self.boxes.tolist(),
            "scores": self.scores.tolist(),
            "labels": self.labels.tolist(),
            "names": list(self.names),
        }


@dataclass(frozen=True)
class SSDSettings:
    """An SSD's post-processing (torchvision's names and defaults of ssdlite320), and which
    outputs hold the box regressions, class logits and default boxes (anchors)."""

    outputs: Mapping[str, str]
    score_thresh: float = 0.001
    nms_thresh: float = 0.55
    topk_candidates: int = 300
    detections_per_img: int = 300
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    bbox_xform_clip: float = math.log(1000.0 / 16)
    background: int = 0

    @classmethod
    def from_card(cls, card: ModelCard) -> SSDSettings:
        """The card's settings; a card that is not an SSD detector's raises ``ConfigError``."""
        settings = dict(card.postprocess)
        if card.task != "detection" or settings.pop("kind", None) != "ssd":
            raise ConfigError(
                f"{card.architecture} is a {card.task} model without SSD post-processing "
                "settings (card.postprocess kind 'ssd'); Model.detect runs SSD detectors"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown or set(settings.get("outputs", {})) != {"boxes", "scores", "anchors"}:
            raise ModelLoadError(
                f"the card's SSD post-processing is malformed (unknown {unknown}, outputs "
                f"{settings.get('outputs')}); re-export the model"
            )
        settings["box_coder_weights"] = tuple(
            float(w) for w in settings.get("box_coder_weights", cls.box_coder_weights)
        )
        return cls(**settings)


def decode_boxes(codes: np.ndarray, anchors: np.ndarray, settings: SSDSettings) -> np.ndarray:
    """torchvision's ``BoxCoder.decode_single``: [A, 4] regressions and [A, 4] xyxy anchors to
    [A, 4] xyxy boxes, in float32 as torch computes them."""
    codes, anchors = codes.astype(_F32, copy=False), anchors.astype(_F32, copy=False)
    widths = anchors[:, 2] - anchors[:, 0]
    heights = anchors[:, 3] - anchors[:, 1]
    ctr_x = anchors[:, 0] + _F32(0.5) * widths
    ctr_y = anchors[:, 1] + _F32(0.5) * heights
    wx, wy, ww, wh = (_F32(w) for w in settings.box_coder_weights)
    clip = _F32(settings.bbox_xform_clip)
    dw = np.minimum(codes[:, 2] / ww, clip)
    dh = np.minimum(codes[:, 3] / wh, clip)
    x = codes[:, 0] / wx * widths + ctr_x
    y = codes[:, 1] / wy * heights + ctr_y
    half_w = _F32(0.5) * (np.exp(dw) * widths)
    half_h = _F32(0.5) * (np.exp(dh) * heights)
    return np.stack([x - half_w, y - half_h, x + half_w, y + half_h], axis=1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float32."""
    logits = logits.astype(_F32, copy=False)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    iou_thresh: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """``torchvision.ops.batched_nms``: greedy NMS per label; kept indices by decreasing score.

    One pass over all candidates in score order: a candidate is kept iff no kept candidate of
    its label overlaps it by IoU > ``iou_thresh`` (IoU in float32 as the C++ kernel, compared
    as a double). Stops after ``max_keep`` (detections_per_img) are kept.
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept_by_label: dict[int, list[int]] = {}
    keep: list[int] = []
    zero = _F32(0)
    for i in order:
        same = kept_by_label.setdefault(int(labels[i]), [])
        if same:
            k = np.asarray(same)
            box, others = boxes[i], boxes[k]
            w = np.maximum(
                zero, np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0])
            )
            h = np.maximum(
                zero, np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1])
            )
            inter = w * h
            iou = inter / (areas[k] + areas[i] - inter)
            if (iou.astype(np.float64) > iou_thresh).any():
                continue
        same.append(int(i))
        keep.append(int(i))
        if max_keep is not None and len(keep) >= max_keep:
            break
    return np.asarray(keep, dtype=np.int64)


def _candidates(
    boxes: np.ndarray, scores: np.ndarray, settings: SSDSettings
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (background aside): scores above the threshold, the best ``topk_candidates``."""
    threshold = _F32(settings.score_thresh)
    picked: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for label in range(scores.shape[1]):
        if label == settings.background:
            continue
        score = scores[:, label]
        index = np.flatnonzero(score > threshold)
        top = index[np.argsort(-score[index], kind="stable")[: settings.topk_candidates]]
        if len(top):
            picked.append((boxes[top], score[top], np.full(len(top), label, dtype=np.int64)))
    if not picked:
        return np.zeros((0, 4), _F32), np.zeros(0, _F32), np.zeros(0, np.int64)
    return tuple(np.concatenate(parts) for parts in zip(*picked, strict=True))  # type: ignore[return-value]


def ssd_image(
    codes: np.ndarray,
    logits: np.ndarray,
    anchors: np.ndarray,
    settings: SSDSettings,
    input_size: Size,
    original_size: Size | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's (boxes, scores, labels) from its [A, 4], [A, C], [A, 4] head outputs; boxes
    in ``original_size`` pixels (None: the network input's)."""
    height, width = input_size
    boxes = decode_boxes(codes, anchors, settings)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    boxes, scores, labels = _candidates(boxes, softmax(logits), settings)
    keep = batched_nms(boxes, scores, labels, settings.nms_thresh, settings.detections_per_img)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if original_size is not None:  # ratios in float32, as torchvision's resize_boxes
        ratio_h = _F32(original_size[0]) / _F32(height)
        ratio_w = _F32(original_size[1]) / _F32(width)
        boxes = boxes * np.array([ratio_w, ratio_h, ratio_w, ratio_h], dtype=_F32)
    return boxes, scores, labels


def detections(
    outputs: Mapping[str, np.ndarray],
    card: ModelCard,
    sizes: Sequence[Size],
    score_threshold: float | None = None,
) -> list[Detections]:
    """Per image Detections from an SSD's outputs for a batch, boxes in each ``sizes`` (H, W)."""
    settings = SSDSettings.from_card(card)
    if score_threshold is not None:
        settings = replace(settings, score_thresh=float(score_threshold))
    if card.input_size is None:
        raise ModelLoadError(f"{card.architecture}: the card has no input size")
    names = settings.outputs
    codes, logits, anchors = (outputs[names[k]] for k in ("boxes", "scores", "anchors"))
    out = []
    for i, size in enumerate(sizes):
        boxes, scores, labels = ssd_image(
            codes[i], logits[i], anchors[i], settings, card.input_size, size
        )
        label_names = tuple(
            card.class_names[k] if k < len(card.class_names) else str(k) for k in labels
        )
        out.append(Detections(boxes, scores, labels, label_names))
    return out


def resize_labels(labels: np.ndarray, size: Size) -> np.ndarray:
    """An [h, w] label map resized to ``size`` (H, W) by nearest neighbour (pixel centres)."""
    height, width = labels.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return labels[np.ix_(rows, cols)]


def label_maps(
    outputs: Mapping[str, np.ndarray], card: ModelCard, sizes: Sequence[Size]
) -> list[np.ndarray]:
    """Per image an int64 [H, W] map of class indices (argmax over the logits' axis 1)."""
    if card.task != "segmentation":
        raise ConfigError(
            f"{card.architecture} is a {card.task} model; Model.segment runs segmentation models"
        )
    name = card.postprocess.get("output") or next(iter(outputs))
    logits = outputs[name]
    if logits.ndim != 4:
        raise ModelLoadError(f"segmentation output {name!r} has shape {logits.shape}, not NCHW")
    classes = logits.argmax(axis=1)
    return [resize_labels(classes[i], size) for i, size in enumerate(sizes)]


def prepare_images(
    images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike], card: ModelCard
) -> tuple[np.ndarray, list[Size]]:
    """Raw images to the card's float32 NCHW batch, and each image's original (H, W)."""
    if isinstance(images, str | Path | np.ndarray) or hasattr(images, "mode"):
        images = [images]  # type: ignore[list-item]
    raw = [load_image(image) for image in images]
    if not raw:
        raise InputError("expected at least one image, got none")
    batch = np.stack([prepare_image(image, card) for image in raw])
    return normalize(batch, card), [(int(r.shape[0]), int(r.shape[1])) for r in raw]
