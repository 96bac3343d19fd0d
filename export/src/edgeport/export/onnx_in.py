"""``export_onnx``: any ONNX file to a parity-checked bundle (ONNX in).

Most detectors and many other models reach a device as an ONNX file someone else exported (a
YOLO or PaddleOCR export, an Optimum export). Such a file is the fp32 source and reference: the
bundle ships it with the model card in its metadata, derives fp16 and the per-target int8 files
(and TensorRT engines) from it, and judges each against the file's own outputs on ONNX
Runtime's CPU provider, on the parity inputs, the calibration data and the example given.

Dimensions: a dynamic leading axis is the batch axis (named ``batch``, in the ``batch``
range); any other dynamic axis keeps the file's name for it (``<input>_<axis>`` when it has
none) and gets its range from ``shapes`` (TensorRT engines need one).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.export.pipeline import ExportJob, run_pipeline
from edgeport.export.samples import Batch, SampleSource, check_like, read_batches, stack
from edgeport.export.settings import BATCH_DIM, ExportSettings
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.errors import ConfigError, ExportError
from edgeport.runtime.specs import TensorSpec

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

EXAMPLE_BATCH = 2  # synthetic samples when a model with fixed shapes comes without data


def load_source(path: str | Path) -> onnx.ModelProto:
    """The ONNX file, checked, with every dynamic input and output axis named (see the module
    doc); ``ConfigError`` when it is no file, ``ExportError`` when it is no valid model."""
    import onnx

    from edgeport.export.onnx import check_model

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ONNX model {path} not found (expected a .onnx file)")
    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as exc:
        raise ExportError(f"{path} is not a readable ONNX model: {exc}") from exc
    model = check_model(model, str(path))
    name_dynamic_axes(model)
    return model


def name_dynamic_axes(model: onnx.ModelProto) -> dict[str, dict[int, str]]:
    """Name every dynamic axis of the graph's inputs and outputs in place (leading: ``batch``,
    else the file's name or ``<tensor>_<axis>``); returns the inputs' dynamic axes."""
    weights = {t.name for t in model.graph.initializer}
    axes: dict[str, dict[int, str]] = {}
    for value in (*model.graph.input, *model.graph.output):
        is_input = any(value is v for v in model.graph.input)
        if is_input and value.name in weights:
            continue
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            name = BATCH_DIM if axis == 0 else (dim.dim_param or f"{value.name}_{axis}")
            dim.dim_param = name
            if is_input:
                axes.setdefault(value.name, {})[axis] = name
    return axes


def export_onnx(
    model: str | Path,
    out: str | Path,
    settings: ExportSettings | None = None,
    *,
    calibration: SampleSource | None = None,
    parity_inputs: SampleSource | None = None,
    **options: Any,
) -> Manifest:
    """Export the ONNX file ``model`` to a bundle at ``out`` and return its manifest.

    ``settings`` (or its fields as keyword ``options``: ``precisions=("fp16", "int8")``,
    ``tensorrt``, ``shapes``, ``task``, ``class_names``, ``image``, ...) says what to produce;
    the card's task is ``other`` unless told. ``calibration`` and ``parity_inputs``: an
    ``.npz`` path (one array per input, samples first), a dict of arrays or an iterable of such
    dicts; int8 needs ``calibration``, and a model with dynamic axes besides the batch needs
    one of them (their shapes fix the example). Raises ``ConfigError``, ``ExportError`` or
    ``ParityError``; ``out`` is then left as it was.
    """
    from edgeport.export.module import base_card
    from edgeport.export.onnx import graph_specs

    settings = (settings or ExportSettings()).with_options(options)
    path = Path(model)
    graph = load_source(path)
    inputs, outputs = graph_specs(graph)
    names = tuple(spec.name for spec in inputs)
    calib = read_batches(calibration, names, "calibration") if calibration is not None else None
    extra = [] if parity_inputs is None else read_batches(parity_inputs, names, "parity_inputs")
    batches = [*extra, *(calib or [])] or [_synthetic(inputs, path)]
    example = {n: a[:EXAMPLE_BATCH] for n, a in batches[0].items()}
    check_like(batches, example, "data")
    parity, left_out = stack(batches, settings.parity_limit)
    if left_out:
        log.info("%d samples (other shapes, or beyond the parity limit) are not stored", left_out)
    settings = settings.with_options(
        {
            "input_names": names,
            "output_names": tuple(spec.name for spec in outputs),
            "dynamic_shapes": {n: a for n, a in _input_axes(inputs).items() if a},
            "architecture": settings.architecture or path.stem,
        }
    )
    job = ExportJob(
        module=None,
        example=example,
        parity=parity,
        card=base_card(None, settings),
        calibration=calib,
        calibration_source=str(calibration) if isinstance(calibration, str | Path) else None,
        source={"kind": "onnx", "file": path.name},
        onnx_model=graph,
    )
    return run_pipeline(job, settings, out)


def _input_axes(inputs: tuple[TensorSpec, ...]) -> dict[str, dict[int, str]]:
    return {
        spec.name: {axis: str(dim) for axis, dim in enumerate(spec.shape) if isinstance(dim, str)}
        for spec in inputs
    }


def _synthetic(inputs: tuple[TensorSpec, ...], path: Path) -> Batch:
    """Seeded synthetic samples for a model whose only dynamic axis is the batch."""
    from edgeport.runtime.feeds import synthetic_feeds

    shapes: dict[str, list[int]] = {}
    for spec in inputs:
        dims = [
            EXAMPLE_BATCH if axis == 0 and isinstance(dim, str) else dim
            for axis, dim in enumerate(spec.shape)
        ]
        if not all(isinstance(d, int) for d in dims):
            raise ConfigError(
                f"{path.name} input {spec.name!r} {spec.describe()} has dynamic axes besides the "
                "batch: give parity or calibration data (--parity-data/--calib-data FILE.npz) "
                "whose shapes fix them"
            )
        shapes[spec.name] = [int(d) for d in dims if isinstance(d, int)]
    log.info("no data given: checking parity on %d seeded synthetic samples", EXAMPLE_BATCH)
    return dict(synthetic_feeds(inputs, shapes))


def onnx_outputs(model: onnx.ModelProto, inputs: Mapping[str, np.ndarray]) -> Batch:
    """The ONNX model's own outputs on ``inputs`` with ONNX Runtime's CPU provider: the
    reference every artifact of an ONNX-in export is judged against."""
    from edgeport.runtime import load
    from edgeport.runtime.errors import EdgeportError
    from edgeport.runtime.tools.check import run_batches

    with tempfile.TemporaryDirectory(prefix="edgeport-onnx-in-") as tmp:
        path = Path(tmp) / "reference.onnx"
        path.write_bytes(model.SerializeToString())
        try:
            with load(path, backend="onnxruntime-cpu", verify=False) as session:
                return run_batches(session, [dict(inputs)], rechunk=True)
        except EdgeportError as exc:
            raise ExportError(f"ONNX Runtime cannot run the source model: {exc}") from exc
