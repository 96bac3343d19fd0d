"""``edgeport predict PATH IMAGE...``: classify image files with a bundle, ONNX file or engine."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edgeport.runtime.cli.options import add_load_options, load_model


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a bundle, an ONNX file or a TensorRT engine",
        description=(
            "Classify image files (PNG, JPEG, ...; grey, RGB or RGBA). Images are resized and "
            "normalised as the model card says. The backend is chosen automatically "
            "(TensorRT, then ONNX Runtime CUDA, then ONNX Runtime CPU) unless --backend is given."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="bundle directory, .onnx or .engine file")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="image files to classify")
    add_load_options(parser)
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--explain", action="store_true", help="also print why this backend was chosen"
    )
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    with load_model(args) as model:
        predictions = model.predict(list(args.images), top_k=args.top_k)
        explanation = model.explain() if args.explain else None
    if args.json:
        report: dict[str, Any] = {
            "model": str(model.path),
            "backend": model.backend,
            "precision": model.precision,
            "artifact": model.artifact.name if model.artifact else None,
            "predictions": [
                {"image": image, **pred.to_dict()}
                for image, pred in zip(args.images, predictions, strict=True)
            ],
        }
        if explanation:
            report["explain"] = explanation
        print(json.dumps(report, indent=2))
        return 0
    target = model.artifact.name if model.artifact else model.path.name
    print(f"# {model.path}: {target} on {model.backend} ({model.precision})")
    for image, pred in zip(args.images, predictions, strict=True):
        ranked = "  ".join(
            f"{label} {p:.3f}" for label, p in zip(pred.labels, pred.probabilities, strict=True)
        )
        print(f"{image}: {pred.top1} ({pred.confidence:.3f})  [{ranked}]")
    if explanation:
        print(explanation)
    return 0
