"""fp32 ONNX to int8 Q/DQ ONNX for one target engine, calibrated on real data.

``quantize_int8`` runs the target's recipe (:mod:`edgeport.export.int8.recipes`) on the
prepared fp32 model (:mod:`edgeport.export.int8.prepare`), checks that the graph's inputs and
outputs are unchanged and that something was quantized, and stores the model card. The
calibration data is read by :class:`CalibrationReader`, in batches, with a progress bar; int8
is never calibrated on noise.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.export.onnx import check_model, check_same_io, graph_specs, save_model, set_metadata
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, ExportError

if TYPE_CHECKING:
    from edgeport.export.int8.recipes import Quantized

log = logging.getLogger(__name__)

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_BATCH = 32


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


def calibration_method(name: str) -> Any:
    """ONNX Runtime's ``CalibrationMethod`` for one of :data:`CALIBRATION_METHODS`."""
    from onnxruntime.quantization import CalibrationMethod

    CalibrationConfig(method=name)  # validates the name
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
    target: str = "onnxruntime",
    method: str = "minmax",
    exclude: Sequence[str] = (),
    prepared: bool = False,
) -> Quantized:
    """Quantize the fp32 ONNX ``src`` to an int8 Q/DQ ONNX ``dst`` for the engine family
    ``target``, calibrated on the batches of named inputs ``calibration``, the nodes named in
    ``exclude`` kept in float. ``prepared``: ``src`` is already the output of
    :func:`~edgeport.export.int8.prepare.prepare_fp32` (else it is prepared first)."""
    import onnx

    from edgeport.export.int8.prepare import prepare_fp32
    from edgeport.export.int8.recipes import RECIPES

    if target not in RECIPES:
        raise ConfigError(f"int8 target must be one of {tuple(RECIPES)}, got {target!r}")
    CalibrationConfig(method=method)
    src, dst = Path(src), Path(dst)
    io_specs = graph_specs(onnx.load(str(src), load_external_data=False))
    with tempfile.TemporaryDirectory(prefix="edgeport-int8-", dir=dst.parent) as tmp:
        model_in = src if prepared else prepare_fp32(src, Path(tmp) / "prepared.onnx")
        staged = Path(tmp) / "quantized.onnx"
        samples = CalibrationReader(calibration).samples
        log.info("int8 for %s: calibrating (%s) on %d samples", target, method, samples)
        made = RECIPES[target](model_in, staged, calibration, method=method, exclude=exclude)
        model = check_model(onnx.load(str(staged)), f"the int8 model for {target}")
    check_same_io(io_specs, model, "int8 quantization")
    counts = _qdq_counts(model)
    if counts["QuantizeLinear"] == 0:
        raise ExportError(
            f"int8 quantization of {src.name} for {target} inserted no QuantizeLinear nodes; "
            "the model has no operator the quantizer can quantize"
        )
    log.info("int8 model for %s: %d Q / %d DQ nodes", target, *counts.values())
    set_metadata(model, card, "int8")
    save_model(model, dst)
    return made


def _qdq_counts(model: Any) -> dict[str, int]:
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts
