"""Models and images the export tests use (also a factory for ``edgeport export --module``).

- ``TwoInputNet``: an image [N, 3, 16, 16] and token ids [N, seq] into an nn.Embedding, two
  outputs (``scores`` [N, 5], ``tokens`` [N, seq, 16]); ``two_input`` is its factory.
- ``realistic_ssdlite``: torchvision's ssdlite320 with random weights that behave like trained
  ones numerically (see its docstring), so detections mean something without a download.
- ``photo_crops``: deterministic crops of a real photograph (matplotlib's sample image).
- ``MobileBlockNet``: a 16x16 digits classifier with the layers int8 recipes must handle
  (HardSwish, a depthwise convolution, a squeeze-and-excitation gate, a residual add).
- ``with_outlier_channel``: a trained ``simple_cnn_bn`` made into one that int8 gets wrong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB = 100


class TwoInputNet(nn.Module):
    """Image features and mean token embeddings -> 5 scores; token embeddings gated by the image."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.embed = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(32, 5)

    def forward(self, image: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.conv(image).mean((2, 3))
        tokens = self.embed(ids)
        scores = self.head(torch.cat([features, tokens.mean(1)], 1))
        return scores, tokens * features[:, None, :]


def two_input_module() -> nn.Module:
    torch.manual_seed(0)
    return TwoInputNet().eval()


def two_input_example(batch: int = 2, seq: int = 7, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((batch, 3, 16, 16)).astype(np.float32),
        "ids": rng.integers(0, VOCAB, (batch, seq), dtype=np.int64),
    }


def two_input() -> nn.Module:
    """The ``--module export_models:two_input`` factory (examples come from ``--input``)."""
    return two_input_module()


def two_input_with_example() -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A factory that returns its example inputs too."""
    return two_input_module(), two_input_example()


def photo_crops(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``count`` uint8 HWC RGB crops (random position/scale, flips) of a real photograph."""
    import matplotlib
    from PIL import Image

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    rng = np.random.default_rng(seed)
    base = Image.open(photo).convert("RGB")
    out = np.empty((count, *size, 3), dtype=np.uint8)
    for i in range(count):
        scale = np.sqrt(rng.uniform(0.2, 1.0))
        w, h = int(base.width * scale), int(base.height * scale)
        x, y = int(rng.integers(0, base.width - w + 1)), int(rng.integers(0, base.height - h + 1))
        crop = np.asarray(base.crop((x, y, x + w, y + h)).resize((size[1], size[0])))
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def realistic_ssdlite(seed: int = 0, sharpen: float = 2.0) -> nn.Module:
    """ssdlite320_mobilenet_v3_large with random weights that act like trained ones.

    Straight from the constructor every activation vanishes (N(0, 0.03) conv init: all scores
    1/91). Here convolutions get fan-in (Kaiming) init, batch-norm statistics are recomputed on
    photo crops, and the last classification convolutions are scaled by ``sharpen``, so some
    scores are far above the threshold and most far below, as in a trained detector.
    """
    from torchvision.models import detection

    torch.manual_seed(seed)
    model = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    images = torch.from_numpy(photo_crops(32, (320, 320), seed=1000 + seed)).permute(0, 3, 1, 2)
    model.backbone.train()
    model.head.train()
    with torch.no_grad():
        for chunk in (images.float() / 255).split(8):
            model.head(list(model.backbone((chunk - 0.5) / 0.5).values()))
        for block in model.head.classification_head.module_list:
            block[-1].weight.mul_(sharpen)
            block[-1].bias.mul_(sharpen)
    return model.eval()


class MobileBlockNet(nn.Module):
    """Conv-BN-HardSwish, an inverted residual block (1x1 expand, depthwise 3x3, SE gate, 1x1
    project, residual add) and a linear head: MobileNetV3's layer kinds, on 1x16x16 images."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.depthwise = nn.Sequential(
            nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.Hardswish()
        )
        self.squeeze = nn.Sequential(
            nn.Conv2d(32, 8, 1), nn.ReLU(), nn.Conv2d(8, 32, 1), nn.Sigmoid()
        )
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.depthwise(self.expand(x))
        y = y * self.squeeze(y.mean((2, 3), keepdim=True))
        return self.head((x + self.project(y)).mean((2, 3)))


def with_outlier_channel(model: nn.Module, value: float = 5000.0) -> nn.Module:
    """A copy of a trained ``simple_cnn_bn`` computing exactly the same function, whose first
    convolution makes one more channel, a constant ``value`` that the second one multiplies by
    zero: int8's one scale per activation tensor then rounds every real channel of that tensor
    to a few levels, and the classes come out wrong."""
    import copy
    from collections import OrderedDict

    features = model.features
    conv, norm = features.conv1, features.bn1
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    first = nn.Conv2d(conv.in_channels, conv.out_channels + 1, 3, padding=1)
    second = nn.Conv2d(conv.out_channels + 1, features.conv2.out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        first.weight.zero_()
        first.weight[:-1] = conv.weight * scale[:, None, None, None]
        first.bias[:-1] = norm.bias - norm.running_mean * scale
        first.bias[-1] = value
        second.weight.zero_()
        second.weight[:, :-1] = features.conv2.weight
    out = copy.deepcopy(model)
    out.features = nn.Sequential(
        OrderedDict(
            [
                ("conv1", first),
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(2, 2)),
                ("conv2", second),
                ("bn2", copy.deepcopy(features.bn2)),
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(2, 2)),
            ]
        )
    )
    return out.eval()
