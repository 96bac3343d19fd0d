"""Int8 per target engine: one quantization recipe per engine family, kept only when it wins.

Each engine fuses a different Q/DQ form, so one int8 file cannot suit them all (measured: the
symmetric file TensorRT wants ran MobileNetV3 5x slower than fp32 on ONNX Runtime's CPU
kernels). Every target gets its own file, made by the field's own quantizer for it
(:mod:`~edgeport.export.int8.recipes`), from one prepared fp32 model
(:mod:`~edgeport.export.int8.prepare`):

========== ======================== ====================================================
target     artifact                 recipe
========== ======================== ====================================================
onnxruntime ``onnx-int8``            ONNX Runtime's quantizer in the form its CPU kernels
                                    fuse: uint8 activations, int8 per-channel weights
openvino   ``onnx-int8-openvino``   NNCF (``nncf.quantize``), Q/DQ ONNX
tensorrt   ``onnx-int8-tensorrt``   symmetric int8 Q/DQ placed as TensorRT's guide places it
========== ======================== ====================================================

:mod:`~edgeport.export.int8.decide` then times each file against fp32 on its target engine and
judges it against the reference; one that is not fast enough or does not agree goes through a
bounded fallback (layers kept in float), and one that still does not win is left out.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from edgeport.runtime.errors import ConfigError

OPENVINO_EXTRA = "pip install 'edgeport-export[openvino]'"


@dataclass(frozen=True)
class Int8Target:
    """One engine family's int8 artifact: its name and file in the bundle, the backend that
    judges it (and times it, where it can run here) and what makes it."""

    target: str
    artifact: str
    filename: str
    backend: str
    quantizer: str


# one per engine family int8 has a recipe for (``edgeport.export.settings.INT8_ENGINES``)
INT8_TARGETS: dict[str, Int8Target] = {
    "onnxruntime": Int8Target(
        "onnxruntime",
        "onnx-int8",
        "model.int8.onnx",
        "onnxruntime-cpu",
        "onnxruntime.quantization.quantize_static",
    ),
    "openvino": Int8Target(
        "openvino", "onnx-int8-openvino", "model.int8.openvino.onnx", "openvino", "nncf.quantize"
    ),
    "tensorrt": Int8Target(
        "tensorrt",
        "onnx-int8-tensorrt",
        "model.int8.tensorrt.onnx",
        "tensorrt",
        "onnxruntime.quantization.quantize_static",
    ),
}


@dataclass(frozen=True)
class Int8Policy:
    """When an int8 file is kept: at least ``min_speedup`` times faster than fp32 on its engine
    (timed for ``timing_s`` seconds each, with ``threads`` threads, None: the engine's default)
    and passing parity, after at most ``fallback_rounds`` rounds of keeping layers in float;
    ``keep_slow`` keeps one that is still slow, marked."""

    min_speedup: float = 1.1
    fallback_rounds: int = 3
    keep_slow: bool = False
    timing_s: float = 2.0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.min_speedup > 0:
            raise ConfigError(f"int8 minimum speed-up must be > 0, got {self.min_speedup}")
        if self.fallback_rounds < 0:
            raise ConfigError(f"int8 fallback rounds must be >= 0, got {self.fallback_rounds}")
        if not self.timing_s > 0:
            raise ConfigError(f"int8 timing must last > 0 s, got {self.timing_s}")


def openvino_missing() -> str | None:
    """Why the OpenVINO recipe cannot run here (OpenVINO or NNCF not installed), or None."""
    missing = [m for m in ("openvino", "nncf") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed: {OPENVINO_EXTRA}"
    return None


def resolve_targets(
    requested: tuple[str, ...] | None, tensorrt: bool
) -> tuple[tuple[str, ...], dict[str, str]]:
    """The int8 targets to make and, for a default one that cannot be made here, why.
    ``requested`` None: ONNX Runtime, OpenVINO where its recipe can run, TensorRT when engines
    are built; a requested target that cannot be made raises ``ConfigError``."""
    missing = openvino_missing()
    if requested is not None:
        if "openvino" in requested and missing:
            raise ConfigError(f"the openvino int8 target needs NNCF and OpenVINO: {missing}")
        return requested, {}
    targets, skipped = ["onnxruntime"], {}
    if missing:
        skipped["openvino"] = missing
    else:
        targets.append("openvino")
    if tensorrt:
        targets.append("tensorrt")
    return tuple(targets), skipped
