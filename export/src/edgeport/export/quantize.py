"""fp32 ONNX to int8 Q/DQ ONNX: static post-training quantization calibrated on real data.

The form is the one both ONNX Runtime (CPU) and TensorRT's ONNX parser accept:
``quant_pre_process`` first, then ``quantize_static`` with Q/DQ nodes, symmetric int8
activations and weights, per-channel weights, and biases left in float (TensorRT rejects the
int32 biases ORT writes by default).

Weights use 7 of the 8 bits (``reduce_range``). ONNX Runtime's int8 kernels on x86 CPUs without
VNNI (AVX2 only) multiply with VPMADDUBSW, whose 16-bit sums saturate with full-range weights:
measured on a digits CNN, full range lost 4.5 accuracy points on such a CPU although the same
Q/DQ graph evaluated exactly lost 0.3; with 7-bit weights the CPU result equals the exact one.
TensorRT takes any symmetric scale, so the same file serves both.

Every consumer of a quantized tensor then gets a Q/DQ pair of its own (``unshare_qdq_pairs``).
ORT's quantizer gives a tensor that feeds two nodes (in ResNets the block input, which feeds a
convolution and the residual add) one pair; on CPUs without VNNI, ONNX Runtime only runs
convolutions in int8 after converting their input pair to uint8, which it does only for a pair
with one consumer. Measured on ResNet-18 (224x224, 2 threads): 9 of 20 convolutions ran in
int8 and the model took 31-44 ms, slower than fp32 (26 ms); with unshared pairs all 20 run in
int8 and it takes 18.6-20 ms. TensorRT builds both forms alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.export.onnx import (
    check_model,
    check_same_io,
    graph_specs,
    save_model,
    set_metadata,
    tool_versions,
)
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, ExportError

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_BATCH = 32
REDUCE_RANGE = True  # 7-bit weights: exact on AVX2-only CPUs too (see the module docstring)
EXTRA_OPTIONS: dict[str, Any] = {
    "QuantizeBias": False,  # TensorRT's parser rejects int32 biases
    "ActivationSymmetric": True,  # TensorRT supports symmetric (zero-point 0) int8 only
    "WeightSymmetric": True,
}


@dataclass(frozen=True)
class CalibrationConfig:
    """How many calibration samples and how int8 ranges are chosen.

    ``dataset`` names the dataset of a training run's calibration images (None: the one it was
    trained on); any other export calibrates on the data it is given. Never on noise.
    """

    dataset: str | None = None
    size: int = 256
    method: str = "minmax"

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"calibration method must be one of {CALIBRATION_METHODS}, got {self.method!r}"
            )
        if not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"calibration size must be a positive integer, got {self.size!r}")


class CalibrationReader:
    """An ORT ``CalibrationDataReader`` over batches of named inputs (any number of inputs),
    re-split into batches of at most ``batch_size`` samples, with a progress bar.

    ORT takes any object with ``get_next`` as one (its ``__subclasshook__``), so this module
    imports onnxruntime only when quantizing and the CLI can import it cheaply.
    """

    def __init__(
        self, batches: Sequence[Mapping[str, np.ndarray]], batch_size: int = CALIBRATION_BATCH
    ) -> None:
        if not batches or any(not b or len(next(iter(b.values()))) == 0 for b in batches):
            raise ExportError("calibration needs at least one sample")
        self.batches = [dict(b) for b in batches]
        self.batch_size = batch_size
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    @property
    def samples(self) -> int:
        return sum(len(next(iter(b.values()))) for b in self.batches)

    def _iterate(self) -> Iterator[dict[str, np.ndarray]]:
        from tqdm.auto import tqdm

        with tqdm(total=self.samples, desc="int8 calibration", unit="sample", leave=False) as bar:
            for batch in self.batches:
                size = len(next(iter(batch.values())))
                for start in range(0, size, self.batch_size):
                    chunk = {
                        name: np.ascontiguousarray(array[start : start + self.batch_size])
                        for name, array in batch.items()
                    }
                    yield chunk
                    bar.update(len(next(iter(chunk.values()))))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._iter is None:
            self._iter = self._iterate()
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = None


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[name]


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    card: ModelCard,
    calibration: Sequence[Mapping[str, np.ndarray]],
    *,
    method: str = "minmax",
    reduce_range: bool = REDUCE_RANGE,
) -> dict[str, str]:
    """Quantize the fp32 ONNX ``src`` to an int8 Q/DQ ONNX ``dst``, calibrated on the batches
    of named inputs ``calibration``; returns the tool versions used."""
    import onnx

    CalibrationConfig(method=method)  # validates the method name
    reader = CalibrationReader(calibration)
    io_specs = graph_specs(onnx.load(str(src), load_external_data=False))
    log.info("int8 calibration (%s) on %d samples", method, reader.samples)
    with tempfile.TemporaryDirectory(prefix="edgeport-int8-", dir=Path(dst).parent) as tmp:
        quantized = Path(tmp) / "quantized.onnx"
        _quantize_static(Path(src), Path(tmp), quantized, reader, method, reduce_range)
        model = check_model(onnx.load(str(quantized)), "the int8 model")
    check_same_io(io_specs, model, "int8 quantization")
    counts = _qdq_counts(model)
    if counts["QuantizeLinear"] == 0:
        raise ExportError(
            f"int8 quantization of {Path(src).name} inserted no QuantizeLinear nodes; "
            "the model has no operator ONNX Runtime can quantize"
        )
    unshared = unshare_qdq_pairs(model)
    log.info(
        "int8 model: %d Q / %d DQ nodes (%d pairs unshared)",
        counts["QuantizeLinear"] + unshared,
        counts["DequantizeLinear"] + unshared,
        unshared,
    )
    set_metadata(model, card, "int8")
    save_model(model, Path(dst))
    return tool_versions("onnx", "onnxruntime")


def _quantize_static(
    src: Path, tmp: Path, dst: Path, reader: CalibrationReader, method: str, reduce_range: bool
) -> None:
    """ORT's ``quant_pre_process`` then ``quantize_static`` with the settings above."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    prepared = tmp / "prepared.onnx"
    chatter = io.StringIO()
    try:
        # ORT prints calibration chatter to stdout; keep it for the debug log
        with contextlib.redirect_stdout(chatter):
            quant_pre_process(str(src), str(prepared), skip_symbolic_shape=False)
            quantize_static(
                str(prepared),
                str(dst),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=_method(method),
                extra_options=dict(EXTRA_OPTIONS),
            )
    except (RuntimeError, ValueError, KeyError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"int8 quantization of {src.name} failed: {exc}") from exc
    finally:
        if chatter.getvalue().strip():
            log.debug("onnxruntime.quantization: %s", chatter.getvalue().strip())


def _qdq_counts(model: Any) -> dict[str, int]:
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts


def unshare_qdq_pairs(model: Any) -> int:
    """Give each consumer of a Q -> DQ activation pair a pair (and parameters) of its own.

    The copies get their own scale and zero-point initializers, so ONNX Runtime's common
    subexpression elimination does not merge them back. Values are unchanged: each copy
    quantizes the same tensor with the same parameters. Returns the number of pairs added.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    added = 0
    for dq in [n for n in graph.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        users = consumers.get(dq.output[0], [])
        if q is None or q.op_type != "QuantizeLinear" or dq.output[0] in graph_outputs:
            continue
        if any(name not in initializers for name in q.input[1:]):
            continue
        for user in users[1:]:
            added += 1
            suffix = f"_unshared{added}"
            params = []
            for name in q.input[1:]:
                copy = TensorProto()
                copy.CopyFrom(initializers[name])
                copy.name = name + suffix
                graph.initializer.append(copy)
                params.append(copy.name)
            q_out, dq_out = q.output[0] + suffix, dq.output[0] + suffix
            new_q = helper.make_node("QuantizeLinear", [q.input[0], *params], [q_out])
            new_dq = helper.make_node("DequantizeLinear", [q_out, *params], [dq_out])
            new_q.name, new_dq.name = q.name + suffix, dq.name + suffix
            new_q.attribute.extend(q.attribute)
            new_dq.attribute.extend(dq.attribute)
            for index, name in enumerate(user.input):
                if name == dq.output[0]:
                    user.input[index] = dq_out
            position = list(graph.node).index(user)
            graph.node.insert(position, new_dq)
            graph.node.insert(position, new_q)
    return added
