"""``edgeport train``, ``edgeport evaluate`` and ``edgeport summary``.

Registered through the ``edgeport.commands`` entry points. torch is imported only inside the
handlers, so ``edgeport --help`` and the runtime's commands stay fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from edgeport.runtime.errors import ConfigError

# Flags whose value maps one-to-one onto a TrainConfig field.
_TRAIN_FIELDS = (
    "model", "data", "epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
    "seed", "augment", "hflip", "rotation", "crop_scale", "freeze_backbone", "weights",
    "data_root", "download", "input_size", "in_channels", "normalization", "limit", "device",
    "threads", "overwrite",
)  # fmt: skip
_LAUNCH_FLAGS = ("nnodes", "node_rank", "master_addr", "master_port")


def parse_size(text: str) -> tuple[int, int]:
    """'32' -> (32, 32); '32x48' -> (height 32, width 48)."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x,]\s*(\d+)\s*)?", text)
    if not match or int(match.group(1)) < 1 or (match.group(2) and int(match.group(2)) < 1):
        raise argparse.ArgumentTypeError(f"expected a size like 32 or 32x32, got {text!r}")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def parse_shape(text: str) -> tuple[int, int, int]:
    """'3x32x32' -> (3, 32, 32) (channels x height x width)."""
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", text)
    if not match or min(int(g) for g in match.groups()) < 1:
        raise argparse.ArgumentTypeError(f"expected CxHxW like 3x32x32, got {text!r}")
    channels, height, width = (int(g) for g in match.groups())
    return channels, height, width


def parse_arch_arg(text: str) -> tuple[str, Any]:
    """'dropout=0.3' -> ('dropout', 0.3): the value as JSON when it parses, else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. dropout=0.3), got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


# --------------------------------------------------------------------------------------------
# edgeport train


def register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune an image classifier (digits, CIFAR-10 or your image folders)",
        description=(
            "Train a model from the registry on a dataset and write RUN_DIR: "
            "weights.safetensors, card.json, metrics.json, config.json, curves.png, "
            "predictions.png. Models: simple_cnn, simple_cnn_dropout, simple_cnn_bn, resnet18, "
            "torchvision:<name> (`edgeport summary --list`). Datasets: digits (embedded), "
            "cifar10, imagefolder."
        ),
    )
    add = parser.add_argument
    _add_run_flags(add)
    _add_augmentation_flags(add)
    _add_input_flags(add)
    add("--device", help="cpu (default) or cuda")
    add("--threads", type=int, help="torch CPU threads")
    add("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run")
    add("--overwrite", action="store_true", default=None, help="replace a finished run in --out")
    add("--no-progress", action="store_true", help="no progress bar")
    _add_launch_flags(parser.add_argument_group("distributed training (torchrun)").add_argument)
    parser.set_defaults(handler=run_train)


def _add_launch_flags(add: Any) -> None:
    """``edgeport train``'s torchrun flags: the same command runs in every process."""
    add(
        "--nproc-per-node",
        type=int,
        metavar="N",
        help="train with N processes on this node (DistributedDataParallel: gloo on CPU, nccl "
        "on CUDA); --batch-size stays the global batch",
    )
    add("--nnodes", type=int, metavar="M", help="nodes in all (default 1)")
    add("--node-rank", type=int, metavar="R", help="this node's rank, 0..M-1 (default 0)")
    add("--master-addr", metavar="ADDR", help="address of node 0 (needed with --nnodes > 1)")
    add("--master-port", type=int, metavar="PORT", help="port on node 0 (default 29500)")


def _add_run_flags(add: Any) -> None:
    """``edgeport train``'s model, dataset, output and optimiser flags."""
    add("--model", help="model name (default simple_cnn_bn)")
    add("--data", help="dataset: digits (default), cifar10 or imagefolder")
    add("--out", type=Path, help="run directory to write (required unless --resume)")
    add("--epochs", type=int, help="epochs in all (default 8; with --resume: train up to this)")
    add("--batch-size", type=int, help="default 64")
    add("--lr", type=float, help="learning rate (default 1e-3)")
    add("--optimizer", choices=("adam", "sgd"), help="default adam (as in the article)")
    add("--momentum", type=float, help="SGD momentum (default 0.9)")
    add("--weight-decay", type=float, help="default 0")
    add("--seed", type=int, help="random seed (default 0); same seed, same weights on CPU")


def _add_augmentation_flags(add: Any) -> None:
    """``edgeport train``'s training augmentation flags."""
    add(
        "--augment",
        action=argparse.BooleanOptionalAction,
        help="random training augmentation (default: on, with the dataset's defaults: "
        "digits rotate 10 + crop 0.8, no flip; cifar10/imagefolder flip + rotate 10 + crop 0.8)",
    )
    add("--hflip", action=argparse.BooleanOptionalAction, help="random horizontal flip")
    add("--rotation", type=float, metavar="DEGREES", help="random rotation, 0 disables")
    add(
        "--crop-scale",
        type=float,
        metavar="MIN",
        help="random resized crop keeping MIN..1 of the area, 1 disables",
    )


def _add_input_flags(add: Any) -> None:
    """``edgeport train``'s flags for pretrained weights, data location and input shape."""
    add(
        "--freeze-backbone",
        action="store_true",
        default=None,
        help="train only the classification head",
    )
    add(
        "--weights",
        type=Path,
        help="ImageNet weights for resnet18/torchvision:<name> from a local .safetensors or .pth "
        "(nothing is downloaded)",
    )
    add("--data-root", type=Path, help="where cifar10 / imagefolder data live")
    add("--download", action="store_true", default=None, help="download CIFAR-10 if missing")
    add("--input-size", type=parse_size, metavar="HxW", help="model input size, e.g. 32 or 64x64")
    add("--channels", dest="in_channels", type=int, choices=(1, 3), help="input channels")
    add("--normalization", choices=("article", "imagenet"), help="mean/std to normalise with")
    add(
        "--arch-arg",
        dest="arch_args",
        action="append",
        type=parse_arch_arg,
        metavar="KEY=VALUE",
        help="extra model argument (repeatable), e.g. --arch-arg dropout=0.3",
    )
    add("--limit", type=int, metavar="N", help="train on the first N training images only")


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig the flags describe (for --resume: the saved one, updated by the flags)."""
    from edgeport.train.loop import TrainConfig, load_train_config

    given = {name: getattr(args, name) for name in _TRAIN_FIELDS if getattr(args, name) is not None}
    if args.arch_args:
        given["arch_args"] = dict(args.arch_args)
    if args.resume is not None:
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise ConfigError("--resume continues in its own directory; drop --out")
        config = load_train_config(args.resume)
        for name, value in given.items():
            setattr(config, name, value)
        config.resume = args.resume
        config.out = args.resume
        config.overwrite = False
    else:
        if args.out is None:
            raise ConfigError("edgeport train needs --out RUN_DIR (or --resume RUN_DIR)")
        config = TrainConfig(out=args.out, **given)
    config.progress = not args.no_progress and sys.stderr.isatty()
    return config


def launch_config(args: argparse.Namespace) -> Any:
    """The torchrun settings the flags ask for, or None (one process)."""
    from edgeport.train.distributed import LaunchConfig

    extra = [f"--{n.replace('_', '-')}" for n in _LAUNCH_FLAGS if getattr(args, n) is not None]
    if args.nproc_per_node is None:
        if extra:
            raise ConfigError(f"{', '.join(extra)} only apply with --nproc-per-node N")
        return None
    return LaunchConfig(
        nproc_per_node=args.nproc_per_node,
        nnodes=args.nnodes or 1,
        node_rank=args.node_rank or 0,
        master_addr=args.master_addr,
        master_port=args.master_port,
    )


def run_train(args: argparse.Namespace) -> int:
    from edgeport.train import distributed
    from edgeport.train.checkpoint import METRICS_FILE
    from edgeport.train.loop import train

    config = config_from_args(args)
    launch = launch_config(args)
    if launch is not None and not distributed.launched():  # this process launches the others
        distributed.per_rank_batch(config.batch_size, launch.world_size)
        at = args.argv.index(args.command)
        return distributed.launch(launch, [*args.argv[:at], *args.argv[at + 1 :]])
    main_rank = distributed.from_env(config.device).is_main
    if not main_rank:  # rank 0 reports; the others only warn
        logging.getLogger("edgeport").setLevel(logging.WARNING)
    run_dir = train(config)
    if not main_rank:
        return 0
    metrics = json.loads((run_dir / METRICS_FILE).read_text(encoding="utf-8"))
    print(
        f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_count']} "
        f"{metrics['dataset']} test images after {metrics['epochs']} epochs "
        f"({metrics['train_seconds']:.1f} s of training)"
    )
    print(f"run saved to {run_dir}/")
    for name in sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")):
        print(f"  {name}")
    return 0


# --------------------------------------------------------------------------------------------
# edgeport evaluate


def register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy and per-class accuracy of a trained run",
        description="Evaluate RUN_DIR's PyTorch model on a dataset split.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    parser.add_argument("--data", help="dataset (default: the one the run was trained on)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from edgeport.train.evaluate import evaluate

    result = evaluate(
        args.run_dir,
        args.data,
        split=args.split,
        data_root=args.data_root,
        limit=args.limit,
        download=args.download,
    )
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0


# --------------------------------------------------------------------------------------------
# edgeport summary


def register_summary(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary",
        help="per-layer output shapes, parameters and MACs of a model",
        description=(
            "Show each layer's output shape, parameter count and multiply-accumulates for one "
            "image. MODEL is a registry name, torchvision:<name>, or a RUN_DIR."
        ),
    )
    parser.add_argument("model", nargs="?", metavar="MODEL")
    parser.add_argument("--input", type=parse_shape, metavar="CxHxW", help="e.g. 3x32x32")
    parser.add_argument("--num-classes", type=int, default=10, help="default 10")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--list", action="store_true", help="list every model name and exit")
    parser.set_defaults(handler=run_summary)


def run_summary(args: argparse.Namespace) -> int:
    """Summarise a registry model at --input (default: its own size), or a RUN_DIR's model."""
    from edgeport.train.models import available_models, build_model, default_input_size
    from edgeport.train.summary import summarize

    if args.list:
        print("\n".join(available_models(include_torchvision=True)))
        return 0
    if not args.model:
        raise ConfigError(
            "edgeport summary needs a MODEL: one of " + ", ".join(available_models())
            + ", torchvision:<name> or a RUN_DIR (`edgeport summary --list` shows all)"
        )  # fmt: skip
    if Path(args.model).is_dir():
        from edgeport.train.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.model)
        model, shape = checkpoint.model, checkpoint.card.input_shape
        if args.input is not None and args.input != shape:
            raise ConfigError(f"{args.model} takes {'x'.join(map(str, shape))}, not --input")
    else:
        shape = args.input or (3, *default_input_size(args.model))
        model = build_model(
            args.model, num_classes=args.num_classes, in_channels=shape[0], input_size=shape[1:]
        )
    result = summarize(model, shape)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0
