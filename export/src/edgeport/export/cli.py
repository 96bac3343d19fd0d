"""``edgeport export RUN_DIR --out BUNDLE``: the command around ``edgeport.export.export``."""

from __future__ import annotations

import argparse
from typing import Any

from edgeport.export.quantize import CALIBRATION_METHODS, CalibrationConfig


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def register_export(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a training run to a parity-checked bundle (ONNX fp32/fp16/int8, TensorRT)",
        description=(
            "Export RUN_DIR (from `edgeport train`) to a bundle: ONNX fp32/fp16/int8 and, with "
            "--tensorrt, one TensorRT engine per precision. Every artifact is checked against "
            "the PyTorch model on held-out test images; one outside its tolerance fails the "
            "export and leaves BUNDLE as it was."
        ),
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training run directory")
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to write")
    parser.add_argument(
        "--precision",
        default="fp32",
        metavar="LIST",
        help="comma-separated precisions: fp32,fp16,int8 (default: fp32)",
    )
    parser.add_argument(
        "--tensorrt",
        action="store_true",
        help="also build a TensorRT engine per precision (tensorrt or tensorrt_rtx)",
    )
    parser.add_argument(
        "--batch",
        default="1:8:32",
        metavar="MIN:OPT:MAX",
        help="batch sizes the artifacts accept; OPT is what TensorRT tunes for (default 1:8:32)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    parser.add_argument(
        "--calib-data",
        default=None,
        metavar="NAME",
        help="dataset of the int8 calibration images (default: the run's training data)",
    )
    parser.add_argument(
        "--calib-size", type=_positive, default=256, metavar="N", help="calibration images"
    )
    parser.add_argument(
        "--calib-method",
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="how int8 ranges are chosen (default minmax)",
    )
    parser.add_argument("--data-root", default=None, help="where cifar10/imagefolder data lives")
    parser.add_argument(
        "--parity-limit",
        type=_positive,
        default=None,
        metavar="N",
        help="check parity on N held-out test images (default: the whole test split)",
    )
    parser.add_argument(
        "--allow-parity-failure",
        action="store_true",
        help="keep artifacts that miss their tolerance, marked failed in the manifest",
    )
    parser.add_argument(
        "--workspace-mb", type=_positive, default=1024, help="TensorRT workspace limit (MiB)"
    )
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from edgeport.export.api import export
    from edgeport.runtime.bundle import BatchRange

    manifest = export(
        args.run_dir,
        args.out,
        precisions=args.precision,
        tensorrt=args.tensorrt,
        batch=BatchRange.parse(args.batch),
        opset=args.opset,
        calib=CalibrationConfig(
            dataset=args.calib_data, size=args.calib_size, method=args.calib_method
        ),
        data_root=args.data_root,
        parity_limit=args.parity_limit,
        allow_parity_failure=args.allow_parity_failure,
        workspace_bytes=args.workspace_mb << 20,
    )
    print(f"bundle: {args.out}")
    for art in manifest.artifacts:
        parity = art.parity or {}
        status = parity.get("status", "unchecked")
        detail = ""
        if parity.get("max_abs") is not None:
            detail = f"max_abs={parity['max_abs']:.2g} top1={parity['top1_agreement']:.2%}" + (
                f" acc={parity['accuracy_candidate']:.2%}"
                if parity.get("accuracy_candidate") is not None
                else ""
            )
        elif parity.get("reason"):
            detail = parity["reason"]
        print(f"  {art.name:<16} {art.size_bytes / 1e6:8.2f} MB  {status:<8} {detail}")
    failed = manifest.export.get("failed_parity") or []
    if failed:
        print(f"warning: kept despite failing parity: {', '.join(failed)}")
    return 0
