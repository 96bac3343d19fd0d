"""The formats besides ONNX and TensorRT engines, each converted, listed in the manifest and
gated against PyTorch on its own runtime, exactly as a device loads it:

=========== ============================= ================================ =========== ==========
format      file                          made from                        precisions  runtime
=========== ============================= ================================ =========== ==========
openvino    ``model.P.xml`` + ``.bin``    the ONNX file of that precision  fp32 fp16   openvino
                                          (int8: OpenVINO's int8 file)     int8
executorch  ``model.P.pte``               the module: torch.export,        fp32 int8   executorch
                                          XNNPACK delegate
litert      ``model.P.tflite``            the module: litert-torch         fp32 int8   litert
                                          (fixed shapes)
=========== ============================= ================================ =========== ==========

int8 is calibrated on the same samples as the ONNX int8. A converter that fails on the model
(an operator it cannot lower, a runtime that cannot run what it wrote) is recorded in
``manifest.export["formats"]["failed"]`` with its error, and the other artifacts are written;
when that format is the only one asked for, the export fails instead. A precision a format
does not have (fp16 on phones' CPUs) is listed there as ``left_out``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.export import executorch, litert, openvino_ir
from edgeport.export.samples import Batch
from edgeport.export.settings import BATCH_DIM, ExportSettings
from edgeport.runtime.bundle import SideFile
from edgeport.runtime.errors import ConfigError, ExportError
from edgeport.runtime.io import sha256_file
from edgeport.runtime.specs import UNBOUNDED, TensorSpec

if TYPE_CHECKING:
    from edgeport.export.pipeline import _Exporter

log = logging.getLogger(__name__)

Converted = tuple[dict[str, str], dict[str, Any]]  # tool versions, Artifact fields


@dataclass(frozen=True)
class Converter:
    """How one format is made and which runtime checks it."""

    format: str
    suffix: str
    precisions: tuple[str, ...]
    backend: str
    convert: Callable[[_Exporter, str, Path, Batch], Converted]
    preflight: Callable[[], object]


def _openvino(ex: _Exporter, precision: str, dst: Path, trace: Batch) -> Converted:
    from edgeport.export.openvino_ir import save_ir

    onnx_name, src = f"onnx-{precision}", ex.onnx_paths.get(precision)
    if precision == "int8":  # the int8 file made and kept for OpenVINO (NNCF's recipe)
        from edgeport.export.int8 import INT8_TARGETS

        onnx_name, src = INT8_TARGETS["openvino"].artifact, ex.int8_paths.get("openvino")
    if src is None:
        raise ExportError(
            f"no {precision} ONNX file for OpenVINO to convert (int8: the OpenVINO int8 file was "
            "not made or was left out; see int8_left_out in the manifest)"
        )
    tools, weights = save_ir(src, dst)
    rel = weights.relative_to(ex.root).as_posix()
    source = onnx_name if "onnx" in ex.s.formats else None
    files = {rel: SideFile(sha256_file(weights), weights.stat().st_size)}
    return tools, {"files": files, "source": source}


def _module(ex: _Exporter) -> Any:
    """The PyTorch module ExecuTorch and LiteRT convert; an ONNX source has none."""
    if ex.job.module is None:
        raise ExportError(
            "ExecuTorch and LiteRT files are converted from the PyTorch module, and an ONNX "
            "source has none: export the module, or ask for onnx, tensorrt or openvino"
        )
    return ex.job.module


def _executorch(ex: _Exporter, precision: str, dst: Path, trace: Batch) -> Converted:
    from edgeport.export.dims import torch_dynamic_shapes
    from edgeport.export.executorch import export_pte
    from edgeport.export.pt2e import tensors

    names = ex.s.input_names or ()
    axes = ex.s.dynamic_shapes or {}
    unbounded = sorted(
        {
            d
            for dims in axes.values()
            for d in dims.values()
            if ex.ranges.get(d, (0, 0, UNBOUNDED))[2] >= UNBOUNDED
        }
    )
    if unbounded:
        raise ExportError(
            f"ExecuTorch plans memory for the largest shape: give the dynamic dimensions "
            f"{unbounded} a range (--shapes NAME:MIN:OPT:MAX)"
        )
    tools = export_pte(
        _module(ex),
        tensors(trace, names),
        torch_dynamic_shapes(axes, ex.ranges, names),
        dst,
        precision=precision,
        calibration=ex.job.calibration or [],
        names=names,
        calibration_chunk=min(32, ex.ranges.get(BATCH_DIM, (1, 1, 32))[2]),
    )
    return tools, {}


def _litert(ex: _Exporter, precision: str, dst: Path, trace: Batch) -> Converted:
    from edgeport.export.dims import torch_dynamic_shapes
    from edgeport.export.litert import export_tflite

    names, outputs = ex.s.input_names or (), ex.s.output_names or ()
    example = fixed_example(ex.job.example, ex.s)
    tools = export_tflite(
        _module(ex),
        example,
        dst,
        inputs=names,
        outputs=outputs,
        precision=precision,
        calibration=ex.job.calibration or [],
        trace=(trace, torch_dynamic_shapes(ex.s.dynamic_shapes or {}, ex.ranges, names)),
    )
    return tools, {"inputs": fixed_specs(ex.card.inputs, example), **_fixed_outputs(ex, example)}


CONVERTERS = {
    c.format: c
    for c in (
        Converter(
            "openvino",
            ".xml",
            ("fp32", "fp16", "int8"),
            "openvino",
            _openvino,
            openvino_ir.import_openvino,
        ),
        Converter(
            "executorch",
            ".pte",
            ("fp32", "int8"),
            "executorch",
            _executorch,
            executorch.import_executorch,
        ),
        Converter(
            "litert",
            ".tflite",
            ("fp32", "int8"),
            "litert",
            _litert,
            litert.import_litert_torch,
        ),
    )
}


def preflight_formats(settings: ExportSettings) -> None:
    """Refuse, before any work, a format whose converter is not installed or that has none of
    the precisions asked for while it is the only format asked for."""
    for fmt in settings.formats:
        converter = CONVERTERS.get(fmt)
        if converter is None:
            continue
        converter.preflight()
        if settings.formats == (fmt,) and not set(settings.precisions) & set(converter.precisions):
            raise ConfigError(
                f"{fmt} is exported at {', '.join(converter.precisions)}, not "
                f"{', '.join(settings.precisions)}"
            )


def export_formats(ex: _Exporter, trace: Batch) -> None:
    """Every format of :data:`CONVERTERS` asked for, at every precision it has."""
    for fmt in (f for f in ex.s.formats if f in CONVERTERS):
        converter = CONVERTERS[fmt]
        for precision in ex.s.precisions:
            name = f"{fmt}-{precision}"
            if precision not in converter.precisions:
                reason = f"{fmt} is exported at {', '.join(converter.precisions)} only"
                ex.formats.setdefault("left_out", []).append({"artifact": name, "reason": reason})
                continue
            _export_one(ex, converter, precision, trace)


def _export_one(ex: _Exporter, converter: Converter, precision: str, trace: Batch) -> None:
    name, rel = f"{converter.format}-{precision}", f"model.{precision}{converter.suffix}"
    dst = ex.root / rel
    start = time.perf_counter()
    try:
        tools, fields = converter.convert(ex, precision, dst, trace)
        ex.timed(name, start)
        artifact = ex.record(
            name, converter.format, precision, rel, tools, target=converter.backend, **fields
        )
        start = time.perf_counter()
        verdict = ex.check(name, precision, rel, backend=converter.backend, artifact=artifact)
        ex.timed(f"parity-{name}", start)
    except Exception as exc:  # a third-party converter or runtime: whatever it raised is recorded
        for path in (dst, *([dst.with_suffix(".bin")] if converter.suffix == ".xml" else [])):
            path.unlink(missing_ok=True)  # what the converter left behind
        error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        if ex.s.formats == (converter.format,):
            raise ExportError(f"{name} failed: {error}") from exc
        log.warning("%s failed, left out of the bundle: %s", name, error)
        ex.formats["failed"].append(
            {"artifact": name, "format": converter.format, "precision": precision, "error": error}
        )
        return
    ex.gate(verdict)
    ex.artifacts.append(replace(artifact, parity=verdict.to_dict()))


def fixed_example(example: Batch, settings: ExportSettings) -> Batch:
    """The example with every batch axis at the batch range's minimum (a fixed-shape format's
    batch); other dimensions as the example has them."""
    axes = settings.dynamic_shapes or {}
    size = settings.batch.min
    out = {}
    for name, array in example.items():
        for axis, dim in axes.get(name, {}).items():
            if dim == BATCH_DIM:
                array = np.take(array, np.arange(size) % array.shape[axis], axis=axis)
        out[name] = np.ascontiguousarray(array)
    return out


def fixed_specs(specs: tuple[TensorSpec, ...], arrays: Batch) -> tuple[TensorSpec, ...]:
    """``specs`` at the shapes of ``arrays`` (by name), every dimension fixed."""
    out = []
    for spec in specs:
        shape = tuple(int(d) for d in arrays[spec.name].shape)
        out.append(TensorSpec(spec.name, spec.dtype, shape, (), spec.value_range))
    return tuple(out)


def _fixed_outputs(ex: _Exporter, example: Batch) -> dict[str, Any]:
    """The outputs at the shapes the module gives on ``example``."""
    from edgeport.export.parity import torch_outputs

    outputs = torch_outputs(_module(ex), example, ex.s.output_names)
    return {"outputs": fixed_specs(ex.card.outputs, outputs)}
