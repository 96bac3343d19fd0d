"""``edgeport check MODEL``: compare every runnable artifact or backend with the reference.

The check itself is ``tools/check.py``; ``--per-layer`` adds ``tools/per_layer.py``'s layer by
layer comparison of each fp16/int8 ONNX file that was checked (the tools never import each
other: this command composes them).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from edgeport.runtime.backends.registry import BACKENDS
from edgeport.runtime.bundle import PRECISIONS
from edgeport.runtime.cli.options import add_input_options, parsed_inputs
from edgeport.runtime.errors import EdgeportError
from edgeport.runtime.tools.check import (
    DEFAULT_SAMPLES,
    REFERENCES,
    CheckReport,
    CheckSettings,
    check,
)
from edgeport.runtime.tools.per_layer import PER_LAYER_CHUNK, PER_LAYER_SAMPLES, compare_layers
from edgeport.runtime.tools.report import check_markdown, write_check

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check a bundle or model file against its reference, output by output",
        description=(
            "Run MODEL (a bundle directory, .onnx, .engine, OpenVINO .xml, ExecuTorch .pte or "
            "LiteRT .tflite file) on every backend this machine has and judge every output "
            "against the reference: for a bundle the PyTorch model rebuilt from it (when torch "
            "is installed) or its stored reference outputs; for a bare file --reference-model "
            "(default: an .onnx itself) run on ONNX Runtime CPU, or on its own runtime for the "
            "other formats, on --inputs or synthetic inputs. Exits 1 when any run is outside its "
            "precision's tolerance, naming it and the output, or when nothing could run."
        ),
    )
    parser.add_argument(
        "model", type=Path, metavar="MODEL", help="bundle, .onnx, .engine, .xml, .pte or .tflite"
    )
    _reference_flags(parser)
    _run_flags(parser)
    parser.add_argument("--json", type=Path, help="write the full report as JSON")
    parser.add_argument("--markdown", type=Path, help="write the report as Markdown")
    parser.set_defaults(handler=run)


def _reference_flags(parser: argparse.ArgumentParser) -> None:
    """What the model is judged against."""
    parser.add_argument(
        "--reference",
        choices=REFERENCES,
        default="auto",
        help="bundles: torch (rebuild the PyTorch model) or stored (the bundle's outputs); "
        "files: onnxruntime-cpu; auto (default): torch when it can, else stored; files "
        "onnxruntime-cpu",
    )
    parser.add_argument(
        "--reference-model",
        type=Path,
        help="files: the model whose outputs are the reference: an .onnx (run on ONNX Runtime "
        "CPU) or an .xml, .pte or .tflite (its own runtime). Default: the .onnx itself; "
        "required for an engine, .xml, .pte and .tflite",
    )
    parser.add_argument(
        "--data",
        help="bundles: dataset to check on (e.g. digits, cifar10, imagefolder); default: the "
        "bundle's stored reference inputs. Needs edgeport-train.",
    )
    parser.add_argument("--data-root", type=Path, help="where the dataset lives")
    parser.add_argument("--split", default="test", help="dataset split (default: test)")
    parser.add_argument("--limit", type=int, help="bundles: use at most N samples")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """What runs, on what inputs, and the per-layer diagnosis."""
    parser.add_argument(
        "--artifact", action="append", help="check only this artifact (repeatable), e.g. onnx-int8"
    )
    parser.add_argument(
        "--backend",
        help="comma-separated backends, from "
        f"{', '.join(BACKENDS)} (default: every one of the model's "
        "format; a bundle's ONNX artifacts on onnxruntime-cpu and onnxruntime-cuda)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for ONNX Runtime")
    add_input_options(parser)
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_SAMPLES,
        help=f"files: synthetic batches to compare (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument(
        "--tolerance",
        choices=PRECISIONS,
        help="files: judge with this precision's tolerances (default: the file's precision "
        "from its metadata, weights or an engine's name); bf16 runs an fp32 file with bf16 "
        "arithmetic on the engines that have it",
    )
    parser.add_argument(
        "--per-layer",
        action="store_true",
        help="for fp16/int8 ONNX files, compare every intermediate tensor with the fp32 ONNX "
        "model and show where the mismatch starts (needs the onnx package)",
    )
    parser.add_argument(
        "--per-layer-samples",
        type=int,
        default=PER_LAYER_SAMPLES,
        help=f"samples used by --per-layer (default {PER_LAYER_SAMPLES})",
    )


def settings_from(args: argparse.Namespace) -> CheckSettings:
    """The flags as :class:`CheckSettings`."""
    shapes, value_ranges = parsed_inputs(args)
    backends = [b.strip() for b in args.backend.split(",") if b.strip()] if args.backend else []
    return CheckSettings(
        reference=args.reference,
        reference_model=args.reference_model,
        data=args.data,
        data_root=args.data_root,
        split=args.split,
        limit=args.limit,
        artifacts=tuple(args.artifact or ()),
        backends=tuple(backends),
        threads=args.threads,
        inputs=args.inputs,
        shapes=shapes,
        value_ranges=value_ranges,
        seed=args.seed,
        samples=args.samples,
        tolerance=args.tolerance,
    )


def attach_per_layer(report: CheckReport, samples: int) -> None:
    """Per-layer reports of every fp16/int8 ONNX file the check compared, in the report."""
    targets = report.layer_targets()
    if not targets:
        report.warnings.append("--per-layer compares fp16/int8 ONNX files; none was checked")
        return
    try:
        reference = report.layer_reference()
    except EdgeportError as exc:
        report.per_layer.update({name: {"error": str(exc)} for name, _, _ in targets})
        return
    feeds = report.layer_feeds(samples, PER_LAYER_CHUNK)
    made_for = {c.label: c.target for c in report.source.candidates}
    for name, precision, path in targets:
        log.info("comparing the layers of %s with %s", name, reference.name)
        # a file made for another engine need not run on ONNX Runtime's fused kernels
        levels = made_for.get(name) in (None, "onnxruntime")
        try:
            layers = compare_layers(
                reference, path, feeds, precision=precision, optimization_levels=levels
            )
        except EdgeportError as exc:
            report.per_layer[name] = {"error": str(exc)}
        else:
            report.per_layer[name] = layers.to_dict()


def run(args: argparse.Namespace) -> int:
    report = check(args.model, settings_from(args))
    if args.per_layer:
        attach_per_layer(report, args.per_layer_samples)
    data = report.to_dict()
    print(check_markdown(data), end="")
    for path in write_check(data, json_path=args.json, markdown_path=args.markdown):
        print(f"wrote {path}", file=sys.stderr)
    if report.passed:
        return 0
    print(f"error: {report.verdict}", file=sys.stderr)
    for verdict in report.failed:
        print(f"error: {verdict.message()}", file=sys.stderr)
    if not report.checked:
        for verdict in report.skipped:
            print(f"error: {verdict.message()}", file=sys.stderr)
    return 1
