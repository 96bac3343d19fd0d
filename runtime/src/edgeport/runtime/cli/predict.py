"""``edgeport predict PATH IMAGE...``: classify image files with a bundle, ONNX file or engine;
with ``--out FILE.parquet``, run any number of inputs on Ray Data (:mod:`edgeport.runtime.batch`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edgeport.runtime.cli.options import add_load_options, load_model
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.preprocess import MAX_IMAGE_PIXELS, set_max_image_pixels

_BATCH_ONLY = ("workers", "batch", "ray_address")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify images with a bundle, an ONNX file or a TensorRT engine",
        description=(
            "Classify image files (PNG, JPEG, ...; grey, RGB or RGBA). Images are resized and "
            "normalised as the model card says. The backend is chosen automatically "
            "(what `edgeport tune` measured fastest here, else TensorRT, ONNX Runtime CUDA, ONNX "
            "Runtime CPU, OpenVINO) unless --backend is given. "
            "With --out FILE.parquet the inputs (image files, folders searched recursively, or "
            "one .npz/.parquet of tensors) run on Ray Data through a pool of --workers model "
            "actors, one Parquet row per input (needs edgeport-runtime[batch])."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="bundle directory, .onnx or .engine file")
    parser.add_argument(
        "images",
        metavar="INPUT",
        nargs="+",
        help="image files to classify; with --out also folders or one .npz/.parquet of tensors",
    )
    add_load_options(parser)
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--explain", action="store_true", help="also print why this backend was chosen"
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        metavar="N",
        help=f"refuse images larger than this, from their header ({MAX_IMAGE_PIXELS:,})",
    )
    batch = parser.add_argument_group("batch inference on Ray Data (with --out)")
    batch.add_argument("--out", type=Path, metavar="FILE.parquet", help="write predictions here")
    batch.add_argument("--workers", type=int, help="model actors (1); --threads is per actor")
    batch.add_argument("--batch", type=int, help="inputs per model call (32)")
    batch.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster to join (default: a local one)"
    )
    parser.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    if args.max_image_pixels is not None:
        set_max_image_pixels(args.max_image_pixels)
    if args.out is not None:
        return run_batch(args)
    given = [
        f"--{name.replace('_', '-')}" for name in _BATCH_ONLY if getattr(args, name) is not None
    ]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply with --out FILE.parquet (batch mode)")
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


def run_batch(args: argparse.Namespace) -> int:
    """``--out``: predict every input on Ray Data into one Parquet file."""
    from edgeport.runtime.batch import BatchConfig, predict_batch

    if args.explain:
        raise ConfigError("--explain shows one model load; it does not apply with --out")
    config = BatchConfig(
        model=Path(args.path),
        inputs=tuple(Path(p) for p in args.images),
        out=args.out,
        workers=1 if args.workers is None else args.workers,
        batch=32 if args.batch is None else args.batch,
        threads=args.threads,
        top_k=args.top_k,
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        allow_failed=args.allow_failed,
        ray_address=args.ray_address,
        max_image_pixels=args.max_image_pixels,
    )
    result = predict_batch(config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(
        f"{result.rows} rows ({result.errors} errors) written to {result.out} in "
        f"{result.seconds:.1f} s ({result.rows_per_second:.1f} rows/s; {result.workers} workers "
        f"x {result.threads} threads, batch {result.batch})"
    )
    return 0
