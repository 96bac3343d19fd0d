"""How many convolutions an engine still runs in float after optimizing an int8 file.

A Q/DQ file only says where int8 is allowed; the engine decides what runs in int8. A
convolution it cannot fuse into an int8 kernel runs in float and dequantizes its weights on
every call, so the count is the first thing to read when int8 is slow.

- ONNX Runtime (CPU): the model as its optimizer leaves it (``optimized_model_filepath`` at
  ``ORT_ENABLE_ALL``): a ``QLinearConv`` runs in int8, a ``Conv``/``FusedConv`` (NCHWc or not)
  in float.
- OpenVINO: the compiled model's runtime graph (``get_runtime_model``): a convolution whose
  runtime precision is not ``u8``/``i8`` runs in float.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeport.runtime.errors import ExportError

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
ORT_FLOAT_CONVS = frozenset({"Conv", "FusedConv", "ConvTranspose"})
OV_CONV_LAYERS = frozenset({"Convolution", "Deconvolution"})
ORT_TOOL = "onnxruntime optimized model (ORT_ENABLE_ALL, CPU)"
OV_TOOL = "openvino runtime model (CPU plugin)"


@dataclass(frozen=True)
class FloatConvs:
    """``float`` of the ``total`` convolutions of a model run in float on an engine."""

    float: int
    total: int
    tool: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.float} of {self.total} convolutions in float"


def convolutions(path: Path) -> int:
    """The convolutions of an ONNX model (Conv and ConvTranspose nodes)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(node.op_type in CONV_OPS for node in model.graph.node)


def float_convs_onnxruntime(path: Path, threads: int | None = None) -> FloatConvs:
    """The convolutions ONNX Runtime's CPU provider runs in float in ``path``."""
    import onnx
    import onnxruntime as ort

    from edgeport.runtime.backends.onnxrt import ort_errors

    errors: tuple[type[BaseException], ...] = (*ort_errors(), ValueError)
    with tempfile.TemporaryDirectory(prefix="edgeport-ort-opt-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3  # its NCHWc-serialization warning is expected here
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except errors as exc:
            raise ExportError(f"ONNX Runtime cannot open {path.name}: {exc}") from exc
        optimized = onnx.load(options.optimized_model_filepath)
    floats = sum(node.op_type in ORT_FLOAT_CONVS for node in optimized.graph.node)
    return FloatConvs(floats, convolutions(path), ORT_TOOL)


def float_convs_openvino(path: Path) -> FloatConvs:
    """The convolutions OpenVINO's CPU plugin runs in float in ``path``."""
    from edgeport.runtime.backends.openvino import OpenVinoSettings, import_openvino

    ov = import_openvino()
    config = OpenVinoSettings(threads=1).config()
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    except RuntimeError as exc:
        raise ExportError(f"OpenVINO cannot compile {path.name}: {exc}") from exc
    floats = 0
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if str(info["layerType"].astype(str)) not in OV_CONV_LAYERS:
            continue
        floats += str(info["runtimePrecision"].astype(str)) not in ("u8", "i8")
    return FloatConvs(floats, convolutions(path), OV_TOOL)


def float_convs(backend: str, path: Path) -> FloatConvs | None:
    """The count on ``backend`` (None where there is no way to count it here)."""
    if backend == "onnxruntime-cpu":
        return float_convs_onnxruntime(path)
    if backend == "openvino":
        return float_convs_openvino(path)
    return None
