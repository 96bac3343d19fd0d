"""Every export format side by side, as Ultralytics' benchmark mode tabulates them.

simple_cnn_bn (3x32x32), resnet18 (3x224x224) and torchvision's mobilenet_v3_small (3x96x96)
are trained on the embedded digits (weights cached under ``.cache/formats``), exported by
``edgeport export`` to every format (ONNX, OpenVINO IR, ExecuTorch ``.pte``, LiteRT
``.tflite``) at fp32 and int8 (int8 calibrated on the same training images for every format),
each artifact judged against PyTorch on the held-out test digits by the export's parity gate
(top-1 agreement and accuracy drop, with the tolerance of its precision), then every artifact
and PyTorch eager are loaded in one process and timed at batch 1 in interleaved rounds on the
same images and threads.

Writes ``formats.json`` and ``formats.md`` to ``benchmarks/results/<machine>/``; ``--readme``
also replaces the table in the README between its markers.

    python benchmarks/run_formats.py                # train (or reuse), export, check, time
    python benchmarks/run_formats.py --train-only   # only the cached training runs
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_lib import REPO, MatrixModel, timed, train_model

log = logging.getLogger("edgeport.benchmarks")

# mobilenet_v3_small trains at 96x96: torchvision's MobileNetV3 keeps BatchNorm statistics with
# momentum 0.01, so it needs hundreds of steps before its eval-mode accuracy leaves chance (one
# epoch at 224x224 stayed at 10%); at 96x96 twelve epochs of batch 16 fit in minutes.
MODELS: dict[str, MatrixModel] = {
    "simple_cnn_bn": MatrixModel("simple_cnn_bn", (32, 32), epochs=8, quick_epochs=2),
    "resnet18": MatrixModel(
        "resnet18", (224, 224), epochs=3, quick_epochs=1, batch_size=32, lr=2e-3, quick_limit=320
    ),
    "mobilenet_v3_small": MatrixModel(
        "mobilenet_v3_small",
        (96, 96),
        epochs=12,
        quick_epochs=1,
        batch_size=16,
        lr=1e-3,
        quick_limit=320,
        model="torchvision:mobilenet_v3_small",
    ),
}
FORMATS = ("onnx", "openvino", "executorch", "litert")
PRECISIONS = ("fp32", "int8")
BACKEND_OF = {"onnx": "onnxruntime-cpu", "openvino": "openvino", "executorch": "executorch"}
BACKEND_OF["litert"] = "litert"
EAGER = "PyTorch eager"
README_START = "<!-- formats-table:start -->"
README_END = "<!-- formats-table:end -->"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import cpu_counts, machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="short training, for validation")
    parser.add_argument("--train-only", action="store_true", help="train (or reuse) and stop")
    parser.add_argument("--threads", type=int, default=cpu_counts()["usable"])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--duration-s", type=float, default=1.0, help="per artifact per round")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "formats")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / machine_slug()
    )
    parser.add_argument("--readme", action="store_true", help="update the README's table")
    parser.add_argument("--reexport", action="store_true", help="export again (runs are reused)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    runs = {
        name: train_model(
            MODELS[name], args.work, quick=args.quick, reuse=True, threads=args.threads
        )
        for name in names
    }
    if args.train_only:
        return 0
    rows: list[dict[str, Any]] = []
    for name, run in runs.items():
        bundle = export_all(run, args.work / name / "bundle", reexport=args.reexport)
        rows += time_bundle(name, bundle, args)
    write_results(rows, args)
    return 0


def export_all(run: Path, bundle: Path, *, reexport: bool) -> Path:
    """Every format at fp32 and int8; parity failures are kept (and shown) so that the table
    reports them instead of stopping."""
    from edgeport.export import export

    if not reexport and (bundle / "manifest.json").is_file():
        log.info("reusing the bundle %s", bundle)
        return bundle
    with timed(f"exporting {run.parent.name} to {', '.join(FORMATS)}"):
        export(run, bundle, precisions=PRECISIONS, formats=FORMATS, allow_parity_failure=True)
    return bundle


if __name__ == "__main__":
    sys.exit(main())
