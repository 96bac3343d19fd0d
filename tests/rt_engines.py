"""TensorRT engines built here from the graphs of :mod:`rt_graphs`, with whichever TensorRT
module is installed, and bundles that carry them."""

from __future__ import annotations

import importlib
from pathlib import Path

import onnx
from _env import tensorrt_module_name
from rt_bundles import DEFAULT_BATCH, artifact_for
from rt_graphs import save

from edgeport.runtime.bundle import BatchRange, EngineInfo, Manifest
from edgeport.runtime.card import ModelCard


def build_engine(onnx_path: Path, engine_path: Path, batch: BatchRange = DEFAULT_BATCH) -> str:
    """Build a TensorRT plan with whichever TensorRT module is installed; returns its name."""
    name = tensorrt_module_name()
    if name is None:
        raise RuntimeError("neither tensorrt nor tensorrt_rtx is installed")
    trt = importlib.import_module(name)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        raise RuntimeError([str(parser.get_error(i)) for i in range(parser.num_errors)])
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    shape = tuple(network.get_input(0).shape)[1:]
    profile.set_shape("input", (batch.min, *shape), (batch.opt, *shape), (batch.max, *shape))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("engine build failed")
    engine_path.write_bytes(bytes(plan))
    return name


def engine_bundle(
    root: Path,
    model: onnx.ModelProto,
    card: ModelCard,
    engine: EngineInfo,
    parity: dict[str, object] | None = None,
) -> Path:
    """A bundle of ``model`` as onnx-fp32 plus a tensorrt-fp32 engine built here from it (batch
    ``DEFAULT_BATCH``), described by ``engine``. Raises RuntimeError when the build fails."""
    onnx_rel, engine_rel = "model.fp32.onnx", f"model.fp32.{engine.flavour}.engine"
    save(model, root / onnx_rel)
    build_engine(root / onnx_rel, root / engine_rel)
    arts = tuple(
        artifact_for(
            root,
            rel,
            name=name,
            precision="fp32",
            chw=card.input_shape,
            parity=parity,
            engine=info,
        )
        for rel, name, info in (
            (onnx_rel, "onnx-fp32", None),
            (engine_rel, "tensorrt-fp32", engine),
        )
    )
    Manifest(card=card, artifacts=arts).save(root)
    return root
