"""Bring a torchvision model: export it to a parity-checked bundle, then classify an image.

    python examples/torchvision_model.py bundles/resnet18
    python examples/torchvision_model.py bundles/resnet18 --weights resnet18.safetensors

Without ``--weights`` the weights are random (seeded), which is enough to see every step; with
your own state dict (``.safetensors``) the classes mean something. The bundle holds ONNX fp32 and
fp16, each checked against PyTorch before it is written, and a model card that tells the
runtime how to preprocess raw images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from edgeport.export import ImagePreprocessing, export_module
from edgeport.runtime import load

CLASSES = ("cat", "dog", "bird", "fish")
SIZE = 64  # input height and width; a real model would use its own, e.g. 224
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="bundle directory to write")
    parser.add_argument("--weights", type=Path, help="a state dict saved as .safetensors")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(CLASSES)).eval()
    if args.weights:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(args.weights))
    example = torch.rand(4, 3, SIZE, SIZE)  # samples first; the batch axis becomes dynamic
    manifest = export_module(
        model,
        (example,),
        args.out,
        precisions=("fp32", "fp16"),
        input_names=("image",),
        output_names=("logits",),
        task="classification",
        class_names=CLASSES,
        image=ImagePreprocessing((SIZE, SIZE), mean=IMAGENET_MEAN, std=IMAGENET_STD),
    )
    for art in manifest.artifacts:
        print(
            f"{art.name}: {art.size_bytes / 1e6:.1f} MB, parity {(art.parity or {}).get('status')}"
        )

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8))
    with load(args.out) as runtime_model:  # no torch needed from here on
        (prediction,) = runtime_model.predict([photo], top_k=2)
        print(
            f"{runtime_model.backend} {runtime_model.precision}: {prediction.top1} "
            f"({prediction.confidence:.2f})"
        )


if __name__ == "__main__":
    main()
