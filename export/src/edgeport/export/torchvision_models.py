"""torchvision models by name, made exportable: ``edgeport export torchvision:NAME``.

- classifiers (any ``torchvision.models`` classification model): image in, logits out;
- segmentation models (FCN, DeepLabV3, LR-ASPP): image in, the ``out`` logits
  [N, classes, H, W] out (:class:`SegOut`; the auxiliary head is not built);
- SSD detectors (``ssdlite320_mobilenet_v3_large``, ``ssd300_vgg16``): the normalised
  fixed-size image in, the raw head outputs out (:class:`SSDRaw`). The whole torchvision SSD
  does not export: its NMS guards on data-dependent sizes, and TensorRT has no NonZero; so
  box decoding, score thresholds and NMS run in the runtime, in numpy
  (:mod:`edgeport.runtime.tasks`), with the settings stored in the card's ``postprocess``.

Weights are seeded random ones, or a local ``.safetensors`` state dict (never downloaded). The
example images are seeded random pixels, preprocessed as the card says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeport.export.samples import Batch
from edgeport.export.settings import ImagePreprocessing
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.preprocess import normalize

log = logging.getLogger(__name__)

PREFIX = "torchvision:"
SSD_MODELS = ("ssdlite320_mobilenet_v3_large", "ssd300_vgg16")
IMAGE_INPUT = "images"
SSD_OUTPUTS = ("bbox_regression", "cls_logits", "anchors")


@dataclass(frozen=True)
class TorchvisionModel:
    """Which torchvision model to export and how: ``num_classes`` (default: the published
    weights' classes), ``weights`` (a local .safetensors state dict), ``image_size`` (height,
    width; default: the published preprocessing's), ``seed`` (random weights and example
    images), ``samples`` (example images, also the parity reference)."""

    name: str
    num_classes: int | None = None
    weights: Path | None = None
    image_size: tuple[int, int] | None = None
    seed: int = 0
    samples: int = 4

    def __post_init__(self) -> None:
        if self.weights is not None and Path(self.weights).suffix != ".safetensors":
            raise ConfigError(
                f"--weights {self.weights}: torchvision weights are read from .safetensors only "
                "(never unpickled); convert with safetensors.torch.save_file(state_dict, path)"
            )
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(f"--num-classes must be positive, got {self.num_classes}")
        if self.samples < 1:
            raise ConfigError(f"samples must be positive, got {self.samples}")


@dataclass
class Prepared:
    """A module ready for ``export_module``: its example inputs and settings options."""

    module: nn.Module
    example: Batch
    options: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)


def family(name: str) -> str:
    """``classification``, ``segmentation`` or ``detection``; unknown names raise."""
    import torchvision

    models = torchvision.models
    if name in SSD_MODELS:
        return "detection"
    if name in models.list_models(module=models.segmentation):
        return "segmentation"
    if name in models.list_models(module=models):
        return "classification"
    segmenters = ", ".join(models.list_models(module=models.segmentation))
    raise ConfigError(
        f"unknown or unsupported torchvision model {name!r}: edgeport exports torchvision "
        f"classifiers, segmentation models ({segmenters}) and the SSD detectors "
        f"{', '.join(SSD_MODELS)}"
    )


def prepare(config: TorchvisionModel) -> Prepared:
    """Build the model (weights loaded, eval mode) with its example, card options and source."""
    task = family(config.name)
    torch.manual_seed(config.seed)
    builder = {"classification": _classifier, "segmentation": _segmenter, "detection": _detector}
    module, options = builder[task](config)
    image: ImagePreprocessing = options["image"]
    options.update(task=task, architecture=PREFIX + config.name)
    source = {
        "kind": "torchvision",
        "name": config.name,
        "weights": str(config.weights) if config.weights else None,
        "seed": config.seed,
    }
    return Prepared(
        module.eval(), example_images(image, config.samples, config.seed), options, source
    )


def example_images(image: ImagePreprocessing, count: int, seed: int) -> Batch:
    """``count`` seeded random-pixel images, preprocessed as ``image`` says."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, *image.size, image.channels), dtype=np.uint8)
    card = ModelCard("example", task="other", **image.card_fields())
    return {image.input or IMAGE_INPUT: normalize(pixels, card)}


def _weights_meta(name: str) -> tuple[Any, Any]:
    """(transforms, categories) of the model's published weights (nothing is downloaded)."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    return weights.transforms(), list(weights.meta.get("categories") or [])


def _class_names(categories: list[str], num_classes: int) -> tuple[str, ...]:
    if len(categories) == num_classes:
        return tuple(categories)
    return tuple(f"class_{i}" for i in range(num_classes))


def _load(model: nn.Module, path: Path | None, ignore: tuple[str, ...] = ()) -> None:
    """Load a safetensors state dict strictly (keys starting with ``ignore`` dropped when the
    model has none), naming every mismatch."""
    if path is None:
        return
    from edgeport.train.checkpoint import read_safetensors
    from edgeport.train.models import state_dict_mismatch

    state = read_safetensors(path)
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(ignore)}
    problems = state_dict_mismatch(expected, state)
    if problems:
        raise ConfigError(
            f"weights file {path} does not match {type(model).__name__} as built (check "
            "--num-classes): " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def _image(transforms: Any, size: tuple[int, int], **extra: Any) -> ImagePreprocessing:
    return ImagePreprocessing(
        size, 3, tuple(transforms.mean), tuple(transforms.std), input=IMAGE_INPUT, **extra
    )


def _classifier(config: TorchvisionModel) -> tuple[nn.Module, dict[str, Any]]:
    from edgeport.train.models import InputSizeError, build_model, default_input_size

    transforms, categories = _weights_meta(config.name)
    classes = config.num_classes or len(categories)
    size = config.image_size or default_input_size(PREFIX + config.name)
    try:
        model = build_model(PREFIX + config.name, num_classes=classes, input_size=size)
    except InputSizeError as exc:  # say export's own flag
        raise ConfigError(exc.advice("--image-size")) from exc
    _load(model, config.weights)
    options = {
        "class_names": _class_names(categories, classes),
        "image": _image(transforms, size),
        "input_names": (IMAGE_INPUT,),
        "output_names": ("logits",),
    }
    return model, options


class SegOut(nn.Module):
    """A torchvision segmentation model returning only its ``out`` logits [N, classes, H, W]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images)
        return out["out"] if isinstance(out, Mapping) else out


def _segmenter(config: TorchvisionModel) -> tuple[nn.Module, dict[str, Any]]:
    import torchvision

    transforms, categories = _weights_meta(config.name)
    classes = config.num_classes or len(categories)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": classes}
    if not config.name.startswith("lraspp"):  # LR-ASPP has no auxiliary head
        kwargs["aux_loss"] = False
    model = torchvision.models.get_model(config.name, **kwargs)
    _load(model, config.weights, ignore=("aux_classifier.",))
    size = config.image_size or (int(transforms.resize_size[0]),) * 2
    options = {
        "class_names": _class_names(categories, classes),
        "image": _image(transforms, size),
        "input_names": (IMAGE_INPUT,),
        "output_names": ("out",),
        "postprocess": {"kind": "argmax", "output": "out"},
    }
    return SegOut(model), options


def ssd_anchors(ssd: Any, size: tuple[int, int]) -> torch.Tensor:
    """The SSD's default boxes [A, 4] (x1, y1, x2, y2 in pixels of a ``size`` input), from its
    own DefaultBoxGenerator on its backbone's feature maps: what ``SSD.forward`` uses."""
    from torchvision.models.detection.image_list import ImageList

    with torch.no_grad():
        x = torch.zeros(1, 3, *size)
        features = list(ssd.backbone(x).values())
        anchors = ssd.anchor_generator(ImageList(x, [tuple(size)]), features)[0]
    return anchors.contiguous()


class SSDRaw(nn.Module):
    """A torchvision SSD without its transform and post-processing: the normalised images
    [N, 3, H, W] (the model's fixed size) to ``bbox_regression`` [N, A, 4], ``cls_logits``
    [N, A, classes] and ``anchors`` [N, A, 4] (the default boxes, the same for every image:
    repeated so that every output has the sample axis first)."""

    default_boxes: torch.Tensor

    def __init__(self, ssd: Any, size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = ssd.backbone
        self.head = ssd.head
        # not named "anchors": an initializer may not share a graph output's name
        self.register_buffer("default_boxes", ssd_anchors(ssd, size), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = list(self.backbone(images).values())
        head = self.head(features)
        anchors = self.default_boxes.expand(images.shape[0], -1, -1)
        return head["bbox_regression"], head["cls_logits"], anchors


def ssd_postprocess(ssd: Any) -> dict[str, Any]:
    """The post-processing settings a torchvision SSD carries, for the card."""
    coder = ssd.box_coder
    return {
        "kind": "ssd",
        "outputs": dict(zip(("boxes", "scores", "anchors"), SSD_OUTPUTS, strict=True)),
        "score_thresh": float(ssd.score_thresh),
        "nms_thresh": float(ssd.nms_thresh),
        "topk_candidates": int(ssd.topk_candidates),
        "detections_per_img": int(ssd.detections_per_img),
        "box_coder_weights": [float(w) for w in coder.weights],
        "bbox_xform_clip": float(coder.bbox_xform_clip),
        "background": 0,
    }


def _detector(config: TorchvisionModel) -> tuple[nn.Module, dict[str, Any]]:
    import torchvision

    _, categories = _weights_meta(config.name)
    classes = config.num_classes or len(categories)
    ssd = torchvision.models.get_model(
        config.name, weights=None, weights_backbone=None, num_classes=classes
    ).eval()
    _load(ssd, config.weights)
    transform = ssd.transform
    size = tuple(int(v) for v in transform.fixed_size)
    if config.image_size is not None and tuple(config.image_size) != size:
        raise ConfigError(
            f"{config.name} takes {size[0]}x{size[1]} images only (its anchors are made for "
            f"that size); leave out --image-size"
        )
    image = ImagePreprocessing(
        (size[0], size[1]),
        3,
        tuple(transform.image_mean),
        tuple(transform.image_std),
        input=IMAGE_INPUT,
    )
    options = {
        "class_names": _class_names(categories, classes),
        "image": image,
        "input_names": (IMAGE_INPUT,),
        "output_names": SSD_OUTPUTS,
        "postprocess": ssd_postprocess(ssd),
    }
    return SSDRaw(ssd, (size[0], size[1])), options
