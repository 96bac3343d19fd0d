"""``edgeport check BUNDLE``: compare every runnable artifact with the PyTorch reference."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edgeport.runtime.tools.check import (
    ENGINE_BACKENDS,
    ONNX_BACKENDS,
    PER_LAYER_SAMPLES,
    REFERENCES,
    check,
)
from edgeport.runtime.tools.report import check_markdown, write_check


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check exported artifacts against the PyTorch model (accuracy, parity)",
        description=(
            "Run every artifact of BUNDLE that this machine can run on real test images and "
            "compare its logits with the PyTorch model rebuilt from the bundle (when torch is "
            "installed) or with the bundle's stored reference logits. Exits 1 when any artifact "
            "is outside its precision's tolerance, naming it."
        ),
    )
    parser.add_argument("bundle", type=Path, help="bundle directory (with manifest.json)")
    parser.add_argument(
        "--data",
        help="dataset to check on (e.g. digits, cifar10, imagefolder); default: the bundle's "
        "stored reference images. Needs edgeport-train.",
    )
    parser.add_argument("--data-root", help="where the dataset lives (cifar10, imagefolder)")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, help="use at most N images")
    parser.add_argument(
        "--reference",
        choices=REFERENCES,
        default="auto",
        help="torch: rebuild the PyTorch model; stored: the bundle's logits; auto: torch when "
        "installed (default)",
    )
    parser.add_argument(
        "--artifact", action="append", help="check only this artifact (repeatable), e.g. onnx-int8"
    )
    parser.add_argument(
        "--backend",
        help="comma-separated backends to use, from "
        f"{', '.join((*ONNX_BACKENDS, *ENGINE_BACKENDS))} (default: ONNX on onnxruntime-cpu "
        "and onnxruntime-cuda, engines on tensorrt)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime")
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="for fp16/int8 ONNX artifacts, compare every intermediate tensor with the fp32 "
        "model and show where the mismatch starts",
    )
    parser.add_argument(
        "--per-layer-samples",
        type=int,
        default=PER_LAYER_SAMPLES,
        help=f"images used by --per-layer (default {PER_LAYER_SAMPLES})",
    )
    parser.add_argument("--json", type=Path, help="write the full report as JSON")
    parser.add_argument("--markdown", type=Path, help="write the report as Markdown")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    backends = [b.strip() for b in args.backend.split(",") if b.strip()] if args.backend else None
    report = check(
        args.bundle,
        data=args.data,
        data_root=args.data_root,
        split=args.split,
        limit=args.limit,
        reference=args.reference,
        artifacts=args.artifact,
        backends=backends,
        threads=args.threads,
        per_layer=args.per_layer,
        per_layer_samples=args.per_layer_samples,
    )
    data = report.to_dict()
    print(check_markdown(data), end="")
    for path in write_check(data, json_path=args.json, markdown_path=args.markdown):
        print(f"wrote {path}", file=sys.stderr)
    if report.passed:
        return 0
    print(f"error: {report.verdict}", file=sys.stderr)
    for c in report.failed:
        why = "; ".join(c.failures) or c.reason or ""
        print(f"error: {c.label}: {why}", file=sys.stderr)
    return 1
