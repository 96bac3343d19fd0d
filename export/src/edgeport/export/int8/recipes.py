"""One int8 recipe per engine family, each the field's own quantizer in the form its engine fuses.

- **onnxruntime** (CPU): ONNX Runtime's ``quantize_static`` with asymmetric uint8 activations
  and symmetric int8 per-channel weights, the form its CPU kernels fuse (in a graph that
  normalizes by elementwise arithmetic or has attention, only the inputs of its weighted
  layers: :func:`normalizes_by_arithmetic`): a convolution runs as
  QLinearConv only when its output feeds one QuantizeLinear, and with uint8 activations the
  quantizer folds Relu/Clip into that Q instead of leaving DQ -> Relu -> Q around it. Measured
  on six torchvision networks (2 threads): every convolution ran in int8, where the symmetric
  int8 form left 9 of 20 (ResNet-18) to 37 of 85 (RegNetY-400MF) in float. Weights use all 8
  bits where the CPU has a saturation-free uint8 x int8 dot product (AVX-512 VNNI, AVX-VNNI,
  AMX, ARM); on x86 CPUs with only AVX2, ONNX Runtime multiplies with VPMADDUBSW, whose 16-bit
  sums saturate with full-range weights (a digits CNN lost 4.5 accuracy points), so 7 bits.
- **openvino**: NNCF (``nncf.quantize``) on the same model: it quantizes the inputs of
  convolutions and matrix products only and keeps HardSwish and Sigmoid whole, which is what
  OpenVINO's CPU plugin fuses. Kept as Q/DQ ONNX: measured on MobileNetV2 (batch 1, 2 threads),
  NNCF's ONNX file ran in 2.9 ms on OpenVINO and NNCF on the OpenVINO model saved as IR in
  4.2-4.6 ms; the IR compiled faster (170 against 230 ms), which the compiled-model cache makes
  a one-time cost. Its file is not for ONNX Runtime: per-channel activation scales at depthwise
  inputs make QLinearConv fail.
- **tensorrt**: symmetric int8 Q/DQ placed as TensorRT's own guide places it: on the inputs of
  weighted layers (Conv, ConvTranspose, Gemm, MatMul; weights per channel) and on the residual
  input of an Add that follows one, never on their outputs (TensorRT fuses what follows), with
  float biases (its ONNX parser rejects int32 ones). NVIDIA's Model Optimizer quantizer needs
  onnxruntime-gpu, which cannot share an environment with onnxruntime, so ONNX Runtime's
  quantizer places the nodes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.export.onnx import save_model, tool_versions
from edgeport.export.quantize import CalibrationReader, calibration_method
from edgeport.export.samples import count
from edgeport.runtime.errors import ExportError

log = logging.getLogger(__name__)

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
Batches = Sequence[Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Quantized:
    """What a recipe made: its quantizer, the settings it used and the tool versions."""

    quantizer: str
    settings: dict[str, Any]
    tools: dict[str, str]


def cpu_dot_product(flags: str | None = None) -> str:
    """``vnni`` where the CPU multiplies uint8 by int8 into int32 without saturating (x86 with
    AVX-512 VNNI, AVX-VNNI or AMX; any ARM CPU), ``avx2`` on other x86 CPUs. ``flags``: the
    ``/proc/cpuinfo`` flags line (read when None; an x86 CPU whose flags cannot be read is
    taken for ``avx2``, the safe side)."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "vnni"
    if flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "avx2"
        flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    found = set(flags.split())
    return "vnni" if found & {"avx512_vnni", "avx_vnni", "amx_int8"} else "avx2"


def _quantize_static(
    src: Path, dst: Path, calibration: Batches, exclude: Sequence[str], **options: Any
) -> None:
    """ONNX Runtime's ``quantize_static`` in Q/DQ form with per-channel weights; its stdout
    chatter goes to the debug log and its errors become ``ExportError``."""
    import onnx
    from onnxruntime.quantization import QuantFormat, quantize_static

    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            quantize_static(
                str(src),
                str(dst),
                CalibrationReader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                nodes_to_exclude=list(exclude),
                **options,
            )
    except (RuntimeError, ValueError, KeyError, onnx.checker.ValidationError) as exc:
        raise ExportError(f"int8 quantization of {src.name} failed: {exc}") from exc
    finally:
        if chatter.getvalue().strip():
            log.debug("onnxruntime.quantization: %s", chatter.getvalue().strip())


def quantize_onnxruntime(
    src: Path, dst: Path, calibration: Batches, *, method: str, exclude: Sequence[str]
) -> Quantized:
    """ONNX Runtime CPU: uint8 activations, int8 per-channel weights (see the module doc)."""
    import onnx
    from onnxruntime.quantization import QuantType

    dot = cpu_dot_product()
    reduce_range = dot != "vnni"
    model = onnx.load(str(src), load_external_data=False)
    weighted_only = has_attention(model) or normalizes_by_arithmetic(model)
    _quantize_static(
        src,
        dst,
        calibration,
        exclude,
        op_types_to_quantize=list(WEIGHTED_OPS) if weighted_only else None,
        reduce_range=reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=calibration_method(method),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )
    settings = {
        "quantized": (
            f"inputs of {', '.join(WEIGHTED_OPS)} only (the graph normalizes with elementwise "
            "arithmetic or has attention, which int8 activations break)"
            if weighted_only
            else "every operator ONNX Runtime's quantizer handles"
        ),
        "format": "QDQ",
        "activations": "uint8, asymmetric, per tensor",
        "weights": f"int8, symmetric, per channel, {7 if reduce_range else 8} bits",
        "weight_bits_why": (
            "this CPU multiplies uint8 x int8 without saturating (VNNI)"
            if dot == "vnni"
            else "this CPU has no VNNI: AVX2's 16-bit sums saturate with 8-bit weights"
        ),
        "calibration": method,
        "fused_activations": "kept whole (no graph optimizer before quantizing)",
    }
    return Quantized("onnxruntime.quantization.quantize_static", settings, _ort_tools())


def quantize_tensorrt(
    src: Path, dst: Path, calibration: Batches, *, method: str, exclude: Sequence[str]
) -> Quantized:
    """TensorRT: symmetric int8 on the inputs of weighted layers and residual adds."""
    import onnx
    from onnxruntime.quantization import QuantType

    _quantize_static(
        src,
        dst,
        calibration,
        exclude,
        op_types_to_quantize=list(WEIGHTED_OPS),
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=calibration_method(method),
        extra_options={
            "QuantizeBias": False,  # TensorRT's parser rejects int32 biases
            "ActivationSymmetric": True,  # TensorRT runs symmetric (zero-point 0) int8 only
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS),
        },
    )
    model = onnx.load(str(dst))
    routed = quantize_residual_inputs(model)
    save_model(model, dst)
    settings = {
        "format": "QDQ",
        "activations": "int8, symmetric, per tensor",
        "weights": "int8, symmetric, per channel, 8 bits",
        "placement": f"inputs of {', '.join(WEIGHTED_OPS)}; residual inputs of Add ({routed})",
        "biases": "float (TensorRT's parser rejects int32 biases)",
        "calibration": method,
    }
    return Quantized("onnxruntime.quantization.quantize_static", settings, _ort_tools())


def quantize_residual_inputs(model: Any) -> int:
    """Feed the residual input of each Add that follows a weighted layer through the Q/DQ pair
    its tensor already has (as another layer's input), so TensorRT fuses the Add into that
    layer's int8 kernel; returns how many inputs were routed."""
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    dequantized: dict[str, str] = {}
    for node in graph.node:
        q = producers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            dequantized.setdefault(q.input[0], node.output[0])
    routed = 0
    for node in graph.node:
        if node.op_type != "Add" or len(node.input) != 2:
            continue
        weighted = [
            (p := producers.get(name)) is not None and p.op_type in WEIGHTED_OPS
            for name in node.input
        ]
        if sum(weighted) != 1:
            continue
        index = weighted.index(False)
        if node.input[index] in dequantized:
            node.input[index] = dequantized[node.input[index]]
            routed += 1
    return routed


def normalizes_by_arithmetic(model: Any) -> bool:
    """Whether the graph computes a normalization from its own statistics (a LayerNorm written
    as ReduceMean, Sub, Mul, Sqrt, as TensorFlow exports it; or LayerNormalization): int8 on
    those elementwise steps (a reciprocal of a variance) loses the signal. Measured on Magika:
    every operator quantized, cosine 0.76 to fp32; only its matrix products, 0.996."""
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            return True
        if node.op_type in ("ReduceMean", "ReduceSumSquare", "ReduceSum") and any(
            kind in ("Sub", "Div") for out in node.output for kind in readers.get(out, [])
        ):
            return True
    return False


def has_attention(model: Any) -> bool:
    """Whether the graph multiplies two activations (attention's query by key, its weights by
    value): NNCF's transformer model type then fits. (A Softmax alone is no sign: classifiers
    end in one.)"""
    constants = {t.name for t in model.graph.initializer}
    constants |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return any(
        node.op_type == "MatMul" and not any(i in constants for i in node.input[:2])
        for node in model.graph.node
    )


def quantize_openvino(
    src: Path, dst: Path, calibration: Batches, *, method: str, exclude: Sequence[str]
) -> Quantized:
    """OpenVINO: NNCF's post-training quantization of the ONNX model (see the module doc)."""
    import onnx

    nncf = import_nncf()
    model = onnx.load(str(src))
    samples = [
        {name: np.ascontiguousarray(array[i : i + 1]) for name, array in batch.items()}
        for batch in calibration
        for i in range(count(batch))
    ]
    transformer = has_attention(model)
    preset = nncf.QuantizationPreset.MIXED if transformer else nncf.QuantizationPreset.PERFORMANCE
    options: dict[str, Any] = {
        "preset": preset,
        "subset_size": len(samples),
        "fast_bias_correction": True,
    }
    if transformer:
        options["model_type"] = nncf.ModelType.TRANSFORMER
    if exclude:
        options["ignored_scope"] = nncf.IgnoredScope(names=list(exclude))
    chatter = io.StringIO()
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(chatter):
            quantized = nncf.quantize(model, nncf.Dataset(samples), **options)
    except (RuntimeError, ValueError, KeyError, nncf.ValidationError) as exc:
        raise ExportError(f"NNCF could not quantize {src.name}: {exc}") from exc
    finally:
        nncf_log.setLevel(level)
    save_model(quantized, dst)
    settings = {
        "format": "QDQ (NNCF's ONNX backend)",
        "preset": preset.value,
        "model_type": "transformer" if transformer else None,
        "subset_size": len(samples),
        "fast_bias_correction": True,
        "calibration": "NNCF's own range estimators",
    }
    return Quantized("nncf.quantize", settings, tool_versions("onnx", "nncf", "openvino"))


def import_nncf() -> Any:
    """NNCF, or ``ExportError`` naming the extra that installs it."""
    try:
        import nncf
    except ImportError as exc:
        raise ExportError(
            f"the OpenVINO int8 recipe needs NNCF ({exc}): pip install 'edgeport-export[openvino]'"
        ) from exc
    return nncf


def _ort_tools() -> dict[str, str]:
    return tool_versions("onnx", "onnxruntime")


Recipe = Callable[..., Quantized]
RECIPES: dict[str, Recipe] = {
    "onnxruntime": quantize_onnxruntime,
    "openvino": quantize_openvino,
    "tensorrt": quantize_tensorrt,
}
