"""``edgeport export``: a training run, any nn.Module or a torchvision model to a bundle.

    edgeport export RUN_DIR --out BUNDLE ...
    edgeport export --module pkg.module:factory --input NAME:SHAPE[:DTYPE] ... --out BUNDLE
    edgeport export torchvision:NAME --out BUNDLE [--weights FILE.safetensors] ...
    edgeport export model.onnx --out BUNDLE --precision fp16,int8 --calib-data calib.npz ...

The flags map onto ``ExportSettings``; each form then calls its front end (``export``,
``export_module``, ``export_onnx``). Heavy libraries are imported only when a command runs.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from edgeport.export.quantize import CALIBRATION_METHODS, CalibrationConfig
from edgeport.runtime.card import TASKS
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.specs import DTYPES

TORCHVISION = "torchvision:"
# flags that not every form takes: dest -> the forms that take it
_FORM_FLAGS = {
    "input": ("module",),
    "output_name": ("module",),
    "dynamic": ("module", "torchvision"),
    "task": ("module", "onnx"),
    "class_names": ("module", "onnx"),
    "parity_data": ("module", "torchvision", "onnx"),
    "weights": ("torchvision",),
    "num_classes": ("torchvision",),
    "image_size": ("torchvision",),
    "data_root": ("run",),
    "value_range": ("module", "torchvision"),
}


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
        help="export a training run, any nn.Module or a torchvision model to a bundle",
        description=(
            "Export to a bundle: ONNX fp32/fp16, int8 per target engine (each kept only when "
            "it is faster than fp32 there and agrees) and, with --tensorrt, one TensorRT "
            "engine per precision; --format adds OpenVINO IR, ExecuTorch .pte and LiteRT "
            ".tflite. SOURCE is a run directory (from `edgeport train`), torchvision:NAME or "
            "an ONNX file; --module PKG.MODULE:FACTORY exports the nn.Module a function of "
            "yours returns. Every artifact is checked against the source (PyTorch, or the ONNX "
            "file on ONNX Runtime); one outside its tolerance fails the export and leaves "
            "BUNDLE as it was."
        ),
    )
    parser.add_argument(
        "source", nargs="?", metavar="SOURCE", help="RUN_DIR, torchvision:NAME or MODEL.onnx"
    )
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle directory to write")
    _output_flags(parser.add_argument_group("what to produce"))
    _module_flags(parser.add_argument_group("any nn.Module (--module) and torchvision models"))
    _data_flags(parser.add_argument_group("parity and calibration data"))
    parser.set_defaults(handler=run_export)


def _output_flags(group: Any) -> None:
    group.add_argument(
        "--precision", default="fp32", metavar="LIST", help="comma-separated: fp32,fp16,int8,bf16"
    )
    group.add_argument(
        "--format",
        default="onnx",
        metavar="LIST",
        help="comma-separated, from onnx,tensorrt,openvino,executorch,litert (default onnx); a "
        "format whose converter fails is left out (recorded) unless it is the only one",
    )
    group.add_argument(
        "--tensorrt", action="store_true", help="also build a TensorRT engine per precision"
    )
    group.add_argument(
        "--batch",
        default="1:8:32",
        metavar="MIN:OPT:MAX",
        help="range of the batch axis; OPT is what TensorRT tunes for (default 1:8:32)",
    )
    group.add_argument(
        "--shapes",
        action="append",
        default=[],
        metavar="NAME:MIN:OPT:MAX",
        help="shape range of an input, e.g. ids:1x1:8x64:32x128 (the TensorRT profile; every "
        "dynamic axis other than the batch needs one for engines)",
    )
    group.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    group.add_argument(
        "--int8-targets",
        metavar="LIST",
        help="engines to make an int8 file for: onnxruntime,openvino,tensorrt (default: "
        "onnxruntime, openvino where NNCF is installed, tensorrt with --tensorrt)",
    )
    group.add_argument(
        "--int8-min-speedup",
        type=float,
        default=1.1,
        metavar="X",
        help="keep an int8 file only when it is X times faster than fp32 on its engine (1.1)",
    )
    group.add_argument(
        "--keep-slow-int8",
        action="store_true",
        help="keep an int8 file that stays slower than that, marked in the manifest",
    )
    group.add_argument(
        "--allow-parity-failure",
        action="store_true",
        help="keep artifacts that miss their tolerance, marked failed in the manifest",
    )
    group.add_argument(
        "--workspace-mb", type=_positive, default=1024, help="TensorRT workspace limit (MiB)"
    )
    group.add_argument(
        "--triton-repo",
        type=Path,
        metavar="DIR",
        help="also write a Triton model repository: one model per artifact that passed parity",
    )
    group.add_argument(
        "--triton-instances", type=_positive, default=1, help="instances per Triton model (1)"
    )


def _module_flags(group: Any) -> None:
    group.add_argument(
        "--module",
        metavar="PKG.MODULE:FACTORY",
        help="a function returning the nn.Module, or (module, example_inputs)",
    )
    group.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:SHAPE[:DTYPE]",
        help="an input, in forward's argument order, with the shape of its example (seeded "
        "synthetic values), e.g. image:2x3x224x224 or ids:2x16:int64",
    )
    group.add_argument("--output-name", action="append", default=[], metavar="NAME")
    group.add_argument(
        "--dynamic",
        action="append",
        default=[],
        metavar="NAME:AXIS=DIM",
        help="a dynamic axis besides axis 0 (batch), e.g. ids:1=seq",
    )
    group.add_argument(
        "--value-range",
        action="append",
        default=[],
        metavar="NAME:LOW,HIGH",
        help="values an input holds (synthetic integer examples are drawn from it)",
    )
    group.add_argument("--task", choices=TASKS, default="other")
    group.add_argument("--class-names", metavar="A,B,...|@FILE", help="class names (or a file)")
    group.add_argument("--weights", type=Path, help="torchvision: a local .safetensors file")
    group.add_argument("--num-classes", type=_positive, help="torchvision: number of classes")
    group.add_argument("--image-size", metavar="H[xW]", help="torchvision: input image size")


def _data_flags(group: Any) -> None:
    group.add_argument(
        "--calib-data",
        default=None,
        metavar="NAME|FILE.npz",
        help="int8 calibration data: a run's dataset NAME (default: its training data), or "
        "for --module/torchvision an .npz with one array per input (samples first)",
    )
    group.add_argument("--parity-data", metavar="FILE.npz", help="more inputs to check parity on")
    group.add_argument(
        "--calib-size", type=_positive, default=256, metavar="N", help="calibration images (runs)"
    )
    group.add_argument(
        "--calib-method",
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="how int8 ranges are chosen (default minmax)",
    )
    group.add_argument("--data-root", default=None, help="where cifar10/imagefolder data lives")
    group.add_argument(
        "--parity-limit",
        type=_positive,
        default=None,
        metavar="N",
        help="check parity on at most N samples (default: all)",
    )


def _form(args: argparse.Namespace) -> str:
    """run, module, torchvision or onnx; flags of another form are refused."""
    if args.module and args.source:
        raise ConfigError(
            "give either SOURCE (a run, torchvision:NAME or MODEL.onnx) or --module, not both"
        )
    if not args.module and not args.source:
        raise ConfigError(
            "nothing to export: give RUN_DIR, torchvision:NAME, MODEL.onnx or --module"
        )
    form = "module" if args.module else "run"
    if args.source and args.source.startswith(TORCHVISION):
        form = "torchvision"
    elif args.source and args.source.lower().endswith(".onnx"):
        form = "onnx"
    wrong = [
        "--" + dest.replace("_", "-")
        for dest, forms in _FORM_FLAGS.items()
        if form not in forms and getattr(args, dest) not in (None, [], "other")
    ]
    if wrong:
        raise ConfigError(f"{', '.join(wrong)} cannot be used when exporting a {form}")
    npz = str(args.calib_data or "").endswith(".npz")
    if args.calib_data and npz != (form != "run"):
        raise ConfigError(
            f"--calib-data {args.calib_data}: a training run calibrates on a dataset NAME; "
            "--module, torchvision and ONNX models on an .npz file with one array per input"
        )
    return form


def _settings(args: argparse.Namespace) -> Any:
    from edgeport.export.settings import ExportSettings

    return ExportSettings(
        precisions=args.precision,
        formats=args.format,
        batch=args.batch,
        shapes=_shapes(args.shapes),
        opset=args.opset,
        calib=CalibrationConfig(
            dataset=None if str(args.calib_data or "").endswith(".npz") else args.calib_data,
            size=args.calib_size,
            method=args.calib_method,
        ),
        parity_limit=args.parity_limit,
        allow_parity_failure=args.allow_parity_failure,
        tensorrt=args.tensorrt,
        workspace_bytes=args.workspace_mb << 20,
        int8_targets=args.int8_targets,
        int8_min_speedup=args.int8_min_speedup,
        keep_slow_int8=args.keep_slow_int8,
    )


def _shapes(items: list[str]) -> dict[str, str]:
    out = {}
    for item in (part for text in items for part in text.split(",") if part.strip()):
        name, sep, rest = item.strip().partition(":")
        if not sep or not name:
            raise ConfigError(f"--shapes expects NAME:MIN:OPT:MAX, got {item!r}")
        out[name] = rest
    return out


def run_export(args: argparse.Namespace) -> int:
    form = _form(args)
    settings = _settings(args)
    if form == "run":
        from edgeport.export.api import export

        manifest = export(args.source, args.out, settings, data_root=args.data_root)
    elif form == "module":
        manifest = _export_module(args, settings)
    elif form == "onnx":
        from edgeport.export.onnx_in import export_onnx

        manifest = export_onnx(
            args.source,
            args.out,
            settings,
            calibration=args.calib_data,
            parity_inputs=args.parity_data,
            task=args.task,
            class_names=_class_names(args.class_names),
        )
    else:
        manifest = _export_torchvision(args, settings)
    _print(manifest, args.out)
    if args.triton_repo is not None:
        from edgeport.export.triton import TritonSettings, write_repository

        for model_dir in write_repository(
            args.out, args.triton_repo, TritonSettings(instances=args.triton_instances)
        ):
            print(f"triton: {model_dir}")
    return 0


def int8_line(record: dict[str, Any]) -> str:
    """An int8 record in a few words: speed-up, float convolutions, layers kept in float."""
    speed = record.get("speedup")
    parts = [f"{speed:.2f}x fp32" if speed is not None else "speed not measured"]
    convs = record.get("float_convs")
    if convs:
        parts.append(f"{convs['float']}/{convs['total']} convs in float")
    if record.get("float_layers"):
        parts.append(f"{len(record['float_layers'])} layers kept in float")
    if record.get("decision") == "kept-slow":
        parts.append("kept although slow (--keep-slow-int8)")
    return ", ".join(parts)


def _print(manifest: Any, out: str) -> None:
    from edgeport.export.parity import headline

    print(f"bundle: {out}")
    for art in manifest.artifacts:
        status = (art.parity or {}).get("status", "unchecked")
        detail = headline(art.parity)
        if art.quantization:
            detail += f"; {int8_line(art.quantization)}"
        print(f"  {art.name:<20} {art.total_bytes / 1e6:8.2f} MB  {status:<8} {detail}")
    for target, record in (manifest.export.get("int8_left_out") or {}).items():
        print(f"  int8 for {target} left out: {record.get('reason')}")
    failed = manifest.export.get("failed_parity") or []
    if failed:
        print(f"warning: kept despite failing parity: {', '.join(failed)}")
    formats = manifest.export.get("formats") or {}
    for entry in formats.get("failed", []):
        print(f"warning: {entry['artifact']} left out, its converter failed: {entry['error']}")
    for entry in formats.get("left_out", []):
        print(f"note: {entry['artifact']} not exported: {entry['reason']}")


def parse_input(text: str) -> Any:
    """``NAME:SHAPE[:DTYPE]`` (``ids:2x16:int64``) to a TensorSpec of that fixed shape."""
    from edgeport.runtime.specs import TensorSpec

    parts = [part.strip() for part in text.split(":")]
    dtype = parts[2] if len(parts) == 3 else "float32"
    if len(parts) not in (2, 3) or not parts[0] or dtype not in DTYPES:
        raise ConfigError(
            f"--input expects NAME:SHAPE[:DTYPE] like image:1x3x224x224 or ids:1x16:int64 "
            f"(dtypes: {', '.join(DTYPES)}), got {text!r}"
        )
    if not parts[1]:
        raise ConfigError(f"--input {text!r}: an input needs a leading sample axis")
    if not re.fullmatch(r"\d+(x\d+)*", parts[1]):
        raise ConfigError(f"--input {text!r}: expected dimensions like 1x3x224x224")
    return TensorSpec(parts[0], dtype, tuple(int(d) for d in parts[1].split("x")))


def _class_names(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ConfigError(f"--class-names {text}: no such file (one class name per line)")
        return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _dynamic(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, dict[int, str]] | None:
    """``--dynamic ids:1=seq`` on top of axis 0 (batch) of every input; None without any."""
    if not args.dynamic:
        return None
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in names}
    for item in args.dynamic:
        name, _, rest = item.partition(":")
        axis, eq, dim = rest.partition("=")
        if not eq or not axis.strip().isdigit() or not dim.strip() or name not in axes:
            raise ConfigError(
                f"--dynamic expects NAME:AXIS=DIM with NAME one of {list(names)}, e.g. "
                f"ids:1=seq, got {item!r}"
            )
        axes[name][int(axis)] = dim.strip()
    return axes


def _export_module(args: argparse.Namespace, settings: Any) -> Any:
    from edgeport.export.module import export_module, input_names, load_factory
    from edgeport.runtime.feeds import parse_value_ranges, synthetic_feeds

    model, example = load_factory(args.module)
    ranges = parse_value_ranges(args.value_range)
    if args.input:  # named as given, passed to forward in the order given
        if example is not None:
            raise ConfigError(f"{args.module} returns example inputs; leave out --input")
        feeds = synthetic_feeds([parse_input(text) for text in args.input], value_ranges=ranges)
        example, names = tuple(feeds.values()), tuple(feeds)
    elif example is None:
        raise ConfigError(
            f"{args.module} returns no example inputs: describe each input with --input "
            "NAME:SHAPE[:DTYPE] (e.g. --input image:2x3x224x224 --input ids:2x16:int64)"
        )
    else:
        names = input_names(model, example, None)
    return export_module(
        model,
        example,
        args.out,
        settings,
        calibration=args.calib_data,
        parity_inputs=args.parity_data,
        source={"kind": "module", "factory": args.module},
        input_names=names,
        output_names=tuple(args.output_name) or None,
        dynamic_shapes=_dynamic(args, names),
        value_ranges=ranges,
        task=args.task,
        class_names=_class_names(args.class_names),
    )


def _image_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--image-size expects H or HxW (positive), got {text!r}")
    return (int(parts[0]), int(parts[-1]))


def _export_torchvision(args: argparse.Namespace, settings: Any) -> Any:
    from edgeport.export.module import export_module
    from edgeport.export.torchvision_models import TorchvisionModel, prepare
    from edgeport.runtime.feeds import parse_value_ranges

    config = TorchvisionModel(
        name=args.source[len(TORCHVISION) :],
        num_classes=args.num_classes,
        weights=args.weights,
        image_size=_image_size(args.image_size),
    )
    prepared = prepare(config)
    return export_module(
        prepared.module,
        prepared.example,
        args.out,
        settings,
        calibration=args.calib_data,
        parity_inputs=args.parity_data,
        source=prepared.source,
        dynamic_shapes=_dynamic(args, tuple(prepared.example)),
        value_ranges=parse_value_ranges(args.value_range),
        **prepared.options,
    )
