"""The LiteRT backend: ``.tflite`` files (LiteRT, formerly TensorFlow Lite, the runtime of
Android phones and Arm microcontrollers) run by LiteRT's interpreter with its XNNPACK CPU
delegate. Torch-free: ``ai-edge-litert`` needs numpy and flatbuffers
(``pip install 'edgeport-runtime[litert]'``).

Inputs and outputs are those of the model's signature (``serving_default``; a file without
signatures: its input and output tensors). A signature lists them sorted by name; a bundle's
manifest gives their order. A fully quantized model takes and returns int8 (or uint8) tensors with
a scale and zero point; edgeport shows them as float32, quantizing what goes in and
dequantizing what comes out with the file's own parameters, as LiteRT's task libraries do. A
dimension the file marks dynamic (-1) takes any size; the interpreter is resized when a call
brings new shapes. Calls are serialised: an interpreter runs one call at a time. The
interpreter is built from the bytes ``load`` read and verified (``model_content``), never from
the file's path.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend, ModelBytes
from edgeport.runtime.backends.spec import BackendSpec, OpenRequest
from edgeport.runtime.envinfo import cpu_counts, package_version
from edgeport.runtime.errors import BackendUnavailable, InputError, ModelLoadError
from edgeport.runtime.specs import UNBOUNDED, TensorSpec

log = logging.getLogger(__name__)

INSTALL = "pip install 'edgeport-runtime[litert]'"
_DTYPES = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float16): "float16",
    np.dtype(np.float64): "float64",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
    np.dtype(np.int16): "int16",
    np.dtype(np.int32): "int32",
    np.dtype(np.int64): "int64",
    np.dtype(np.bool_): "bool",
}


def unavailable_reason() -> str | None:
    """Why LiteRT cannot run here (not installed), or None."""
    if importlib.util.find_spec("ai_edge_litert") is None:
        return f"LiteRT (ai-edge-litert) is not installed: {INSTALL}"
    return None


def import_interpreter() -> ModuleType:
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"the litert backend: {reason}")
    try:
        from ai_edge_litert import interpreter
    except ImportError as exc:
        raise BackendUnavailable(f"LiteRT cannot be imported ({exc}): {INSTALL}") from exc
    return interpreter


@dataclass(frozen=True)
class _Tensor:
    """One signature tensor: its index, its dtype in the file and, when it is quantized, the
    (scale, zero point) that maps it to float32."""

    index: int
    dtype: np.dtype[Any]
    quantization: tuple[float, int] | None


class LiteRtBackend(Backend):
    """One LiteRT interpreter (XNNPACK delegate) over a ``.tflite`` file."""

    name = "litert"

    def __init__(
        self,
        model: ModelBytes,
        *,
        threads: int | None = None,
        input_names: Sequence[str] = (),
        output_names: Sequence[str] = (),
    ) -> None:
        module = import_interpreter()
        self.path = path = model.path
        self._threads = threads or cpu_counts()["usable"] or 1
        try:
            self._interp: Any = module.Interpreter(
                model_content=model.data, num_threads=self._threads
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"LiteRT cannot load {path}: {exc}") from exc
        ins, outs = _signature(self._interp)
        ins, outs = _ordered(ins, input_names), _ordered(outs, output_names)
        self.inputs = tuple(_spec(name, d) for name, d in ins.items())
        self.outputs = tuple(_spec(name, d) for name, d in outs.items())
        self._in = [_tensor(d) for d in ins.values()]
        self._out = [_tensor(d) for d in outs.values()]
        self._shapes = [tuple(int(v) for v in d["shape"]) for d in ins.values()]
        self._lock = threading.Lock()
        log.debug("loaded %s with LiteRT (%d threads)", path, self._threads)

    def infer(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        interp = self._interp
        if interp is None:
            raise ModelLoadError(f"the litert model {self.path} was closed")
        values = [_quantize(a, t) for a, t in zip(arrays, self._in, strict=True)]
        try:
            with self._lock:
                self._resize(interp, values)
                for value, tensor in zip(values, self._in, strict=True):
                    interp.set_tensor(tensor.index, value)
                interp.invoke()
                raw = [interp.get_tensor(t.index) for t in self._out]
        except (ValueError, RuntimeError) as exc:
            shapes = [list(a.shape) for a in arrays]
            raise InputError(f"litert failed on inputs of shapes {shapes}: {exc}") from exc
        return [_dequantize(r, t) for r, t in zip(raw, self._out, strict=True)]

    def _resize(self, interp: Any, values: Sequence[np.ndarray]) -> None:
        shapes = [v.shape for v in values]
        if shapes == self._shapes:
            return
        for tensor, shape in zip(self._in, shapes, strict=True):
            interp.resize_tensor_input(tensor.index, list(shape), strict=True)
        interp.allocate_tensors()
        self._shapes = shapes

    def close(self) -> None:
        self._interp = None

    def describe(self) -> dict[str, Any]:
        quantized = [s.name for s, t in zip(self.inputs, self._in, strict=True) if t.quantization]
        quantized += [
            s.name for s, t in zip(self.outputs, self._out, strict=True) if t.quantization
        ]
        return {
            "library": f"ai-edge-litert {package_version('ai-edge-litert') or 'unknown'}",
            "device": "CPU (XNNPACK delegate)",
            "threads": self._threads,
            "quantized_io": quantized or None,  # shown as float32, (de)quantized by edgeport
        }


def _signature(interp: Any) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The first signature's inputs and outputs by name (in its order), or the file's tensors."""
    signatures = interp.get_signature_list()
    if not signatures:
        ins = {d["name"]: d for d in interp.get_input_details()}
        outs = {d["name"]: d for d in interp.get_output_details()}
        return ins, outs
    key = next(iter(signatures))
    runner = interp.get_signature_runner(key)
    in_details, out_details = runner.get_input_details(), runner.get_output_details()
    names = signatures[key]
    return (
        {n: in_details[n] for n in names["inputs"]},
        {n: out_details[n] for n in names["outputs"]},
    )


def _ordered(details: dict[str, dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """A signature's tensors (LiteRT sorts them by name) in the order ``names`` gives them,
    when ``names`` (a manifest's) are the same tensors."""
    if sorted(names) != sorted(details):
        return details
    return {name: details[name] for name in names}


def _tensor(detail: dict[str, Any]) -> _Tensor:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization") or (0.0, 0)
    quantized = dtype.kind in "iu" and dtype.itemsize == 1 and scale > 0
    return _Tensor(int(detail["index"]), dtype, (float(scale), int(zero)) if quantized else None)


def _spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    tensor = _tensor(detail)
    dtype = "float32" if tensor.quantization else _DTYPES.get(tensor.dtype)
    if dtype is None:
        raise ModelLoadError(f"litert: {name!r} has type {tensor.dtype}, not one edgeport runs")
    signature = detail.get("shape_signature")
    dims = [int(d) for d in (detail["shape"] if signature is None else signature)]
    shape = tuple(None if d < 0 else d for d in dims)
    ranges = tuple((1, 1, UNBOUNDED) if d is None else (d, d, d) for d in shape)
    return TensorSpec(name, dtype, shape, ranges)


def _quantize(array: np.ndarray, tensor: _Tensor) -> np.ndarray:
    if tensor.quantization is None:
        return array
    scale, zero = tensor.quantization
    info = np.iinfo(tensor.dtype)
    values = np.rint(array / np.float32(scale)) + zero
    return np.clip(values, info.min, info.max).astype(tensor.dtype)


def _dequantize(array: np.ndarray, tensor: _Tensor) -> np.ndarray:
    if tensor.quantization is None:
        return array
    scale, zero = tensor.quantization
    return ((array.astype(np.float32) - zero) * np.float32(scale)).astype(np.float32)


def _open(request: OpenRequest) -> Backend:
    return LiteRtBackend(
        request.model,
        threads=request.threads,
        input_names=request.input_names,
        output_names=request.output_names,
    )


SPECS = (
    BackendSpec(
        name="litert",
        formats=("litert",),
        target="litert",
        device="cpu",
        precisions=("fp32", "int8", "fp16"),
        unavailable=lambda file, device_index: unavailable_reason(),
        open=_open,
        packages=("ai-edge-litert",),
        optional_format=True,
    ),
)
