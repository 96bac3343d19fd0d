"""The TensorRT backend: a serialized plan run with ``execute_async_v3``.

Works with full TensorRT 10/11 (module ``tensorrt``) and TensorRT-RTX (module ``tensorrt_rtx``),
which share this API. Device and pinned host buffers come from ``cuda-python``; each model owns
one CUDA stream, buffers sized for the largest batch of the engine's optimization profile, and
(optionally) one CUDA graph per batch size.

Any number of named inputs and outputs are run, each input's shape set per call within the
engine's optimization profile 0; outputs are sized for the profile's largest shapes.

A plan runs only where it was built for, so before deserializing anything the engine's
provenance (from the bundle manifest) is compared with this machine:

1. flavour: the manifest's ``tensorrt`` / ``tensorrt_rtx`` must be importable;
2. version: TensorRT loads only plans built by the same version (every numeric component);
3. a GPU must be present;
4. compute capability: equal to the one it was built for, or >= 8.0 for an "ampere_plus"
   hardware-compatible plan; a TensorRT-RTX plan built for no particular GPU needs a GPU that
   this TensorRT-RTX release supports (its ``ComputeCapability`` enum);
5. where the library has it (TensorRT-RTX), ``Runtime.get_engine_validity`` gives the library's
   own verdict, which also detects a malformed plan without a GPU.

A mismatch raises ``BackendUnavailable`` telling the user to rebuild the engine on this machine.

TensorRT execution contexts are not thread-safe and the buffers are shared, so ``run`` holds a
per-model lock: concurrent callers are served one after another on the model's stream.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import math
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend
from edgeport.runtime.backends.cuda import GpuDevice, cuda_call, cudart, probe_gpus
from edgeport.runtime.backends.spec import BackendSpec, ModelFile, OpenRequest, Profile
from edgeport.runtime.bundle import ENGINE_FLAVOURS, EngineInfo
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    InputError,
    ModelLoadError,
)
from edgeport.runtime.io import read_regular_file
from edgeport.runtime.specs import TensorSpec, numpy_dtype

log = logging.getLogger(__name__)

FLAVOURS = ENGINE_FLAVOURS  # full TensorRT first
_INSTALL = {
    "tensorrt": "pip install 'edgeport-runtime[tensorrt]' (full TensorRT 10/11 and cuda-python)",
    "tensorrt_rtx": "pip install tensorrt-rtx-cu13 cuda-python (TensorRT for RTX)",
}
MAX_PLAN_BYTES = 16 << 30
REBUILD_HINT = (
    "rebuild the engine on this machine (edgeport export RUN_DIR --out BUNDLE --tensorrt), or "
    "use the bundle's ONNX artifacts"
)


def installed_flavours() -> list[str]:
    """The TensorRT modules importable here, full TensorRT first."""
    return [name for name in FLAVOURS if importlib.util.find_spec(name) is not None]


def import_tensorrt(flavour: str | None = None, *, install_hint: str | None = None) -> ModuleType:
    """Import ``flavour`` (or the first installed one); ``BackendUnavailable`` naming the extra
    (``install_hint`` replaces the runtime's, e.g. for building engines)."""
    if flavour is not None and flavour not in FLAVOURS:
        raise ConfigError(f"TensorRT flavour must be one of {FLAVOURS}, got {flavour!r}")
    names = [flavour] if flavour else list(FLAVOURS)
    problems = []
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            problems.append(f"{name}: {exc}")
    wanted = flavour or "tensorrt"
    raise BackendUnavailable(
        f"the TensorRT backend needs module {' or '.join(names)}, which cannot be imported "
        f"({'; '.join(problems)}): {install_hint or _INSTALL[wanted]}"
    )


def _import_for(info: EngineInfo | None) -> ModuleType:
    """The TensorRT module an engine described by ``info`` needs (any, for a bare plan)."""
    try:
        return import_tensorrt(info.flavour if info else None)
    except BackendUnavailable as exc:
        if info is None:
            raise
        raise BackendUnavailable(
            f"the engine was built with {info.flavour} {info.version}: {exc}; or {REBUILD_HINT}"
        ) from exc


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0]))


def _cc_key(cc: str) -> tuple[int, int]:
    major, _, minor = cc.partition(".")
    return int(major), int(minor or 0)


def supported_compute_capabilities(trt: ModuleType) -> tuple[str, ...] | None:
    """For TensorRT-RTX, the GPUs this release can run ("7.5", "12.0", ...); None for full
    TensorRT, whose plans carry the compute capability they were built for."""
    enum = getattr(trt, "ComputeCapability", None)
    if trt.__name__ != "tensorrt_rtx" or enum is None:
        return None
    return tuple(cc for cc in map(sm_to_cc, enum.__members__) if cc)


def sm_to_cc(name: str) -> str | None:
    """A TensorRT-RTX ``ComputeCapability`` member name ("SM86", "SM120") as "8.6"/"12.0"."""
    match = re.fullmatch(r"SM(\d+)(\d)", name)
    return f"{int(match.group(1))}.{match.group(2)}" if match else None


def engine_mismatch(
    info: EngineInfo,
    *,
    flavour: str,
    version: str,
    device: GpuDevice | None,
    supported: tuple[str, ...] | None = None,
) -> str | None:
    """Why a plan described by ``info`` cannot run with ``flavour`` ``version`` on ``device``,
    or None. ``device=None`` skips the GPU checks (the caller reports a missing GPU itself)."""
    built = f"{info.flavour} {info.version}"
    if info.flavour != flavour:
        return (
            f"the engine was built with {built}, but this machine runs {flavour} {version}: "
            f"{REBUILD_HINT}"
        )
    if _version_key(info.version) != _version_key(version):
        return (
            f"the engine was built with {built}, but this machine has {flavour} {version}, and "
            f"TensorRT only loads plans built by the same version: {REBUILD_HINT}"
        )
    if device is None:
        return None
    here = device.compute_capability
    level = (info.hardware_compatibility or "none").lower()
    gpu = f"this GPU ({device.name}) has compute capability {here}"
    # "8.6", or "8.6,8.9" for a TensorRT-RTX plan built for several GPUs; None: not recorded
    # (portable RTX builds, hardware-compatible full TensorRT builds).
    targets = [t.strip() for t in (info.compute_capability or "").split(",") if t.strip()]
    if level == "ampere_plus":
        if _cc_key(here) < (8, 0):
            return f"the engine is built for Ampere or newer (>= 8.0), but {gpu}: {REBUILD_HINT}"
    elif targets and not any(_cc_key(t) == _cc_key(here) for t in targets):
        return (
            f"the engine was built for compute capability {info.compute_capability}, but "
            f"{gpu}: {REBUILD_HINT}"
        )
    return _unsupported_gpu(flavour, version, device, supported)


def _unsupported_gpu(
    flavour: str, version: str, device: GpuDevice, supported: tuple[str, ...] | None
) -> str | None:
    """Why a TensorRT-RTX release cannot run on ``device`` at all (None: it can, or full
    TensorRT, which lists no ``supported`` GPUs)."""
    here = _cc_key(device.compute_capability)
    if supported is None or any(_cc_key(cc) == here for cc in supported):
        return None
    return (
        f"{flavour} {version} runs on compute capabilities {', '.join(supported)}, and this GPU "
        f"({device.name}) has compute capability {device.compute_capability}; build the engine "
        "with full TensorRT (module tensorrt) for this GPU, or use the bundle's ONNX artifacts"
    )


def static_unavailable_reason(info: EngineInfo | None, device_index: int = 0) -> str | None:
    """Why an engine described by ``info`` cannot run here, decided without reading the plan:
    library, version, cuda-python, GPU, compute capability. None when it may run."""
    try:
        trt = _import_for(info)
        flavour, version = trt.__name__, trt.__version__
        if info is not None:
            reason = engine_mismatch(info, flavour=flavour, version=version, device=None)
            if reason:
                return reason
        cudart()
        device = probe_gpus().device(device_index)
    except BackendUnavailable as exc:
        return str(exc)
    supported = supported_compute_capabilities(trt)
    if info is None:
        return _unsupported_gpu(flavour, version, device, supported)
    return engine_mismatch(
        info, flavour=flavour, version=version, device=device, supported=supported
    )


@dataclass(frozen=True)
class Validity:
    """The library's own verdict on a plan (``Runtime.get_engine_validity``)."""

    state: str  # "valid", "suboptimal", "invalid", or "unknown" when the API is missing
    problems: tuple[str, ...]  # EngineInvalidityDiagnostics names

    @property
    def malformed(self) -> bool:
        return "MALFORMED_ENGINE" in self.problems

    def __str__(self) -> str:
        return f"{self.state} ({', '.join(self.problems)})" if self.problems else self.state


def engine_validity(trt: ModuleType, runtime: Any, data: bytes) -> Validity:
    """Ask TensorRT (TensorRT-RTX has this) whether ``data`` can run here, without a GPU."""
    if not hasattr(runtime, "get_engine_validity"):
        return Validity("unknown", ())
    state, diagnostics = runtime.get_engine_validity(data)
    flags = getattr(trt, "EngineInvalidityDiagnostics", None)
    problems: list[str] = []
    if flags is not None:
        problems = [
            name for name, value in flags.__members__.items() if int(diagnostics) & int(value)
        ]
    return Validity(state.name.lower(), tuple(problems))


def check_plan(path: Path, flavour: str | None = None) -> Validity:
    """The library's verdict on the plan at ``path`` (used by ``edgeport inspect``)."""
    data = read_plan(path)
    trt = import_tensorrt(flavour)
    logger = _make_logger(trt, [])
    return engine_validity(trt, trt.Runtime(logger), data)


def read_plan(path: Path) -> bytes:
    data = read_regular_file(path, what="engine file", max_bytes=MAX_PLAN_BYTES)
    if not data:
        raise ModelLoadError(f"engine file {path} is empty (0 bytes); rebuild the engine")
    return data


def _make_logger(trt: ModuleType, errors: list[str]) -> Any:
    """A TensorRT logger that forwards to ``logging`` and keeps the errors for our messages."""
    severity = trt.ILogger.Severity

    class _Logger(trt.ILogger):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level: Any, message: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                errors.append(message)
                log.debug("TensorRT: %s", message)
            elif level == severity.WARNING:
                log.debug("TensorRT warning: %s", message)

    return _Logger()


def _host_array(pointer: int, count: int, dtype: np.dtype) -> np.ndarray:
    """A flat numpy view of ``count`` elements of pinned host memory at ``pointer``."""
    buffer = (ctypes.c_byte * (count * dtype.itemsize)).from_address(pointer)
    return np.frombuffer(memoryview(buffer), dtype=dtype)


def tensor_dtype(trt: ModuleType, dtype: Any) -> np.dtype:
    """The numpy dtype of a TensorRT ``DataType`` (bfloat16 through ml_dtypes)."""
    if dtype == getattr(trt, "bfloat16", None):
        return numpy_dtype("bfloat16")
    try:
        return np.dtype(trt.nptype(dtype))
    except TypeError as exc:
        raise ModelLoadError(f"TensorRT data type {dtype} has no numpy equivalent") from exc


@dataclass
class _Tensor:
    """One input or output of an engine with its device and pinned host buffers."""

    spec: TensorSpec
    dtype: np.dtype
    capacity: int  # elements the buffers hold
    device: int = 0
    host: np.ndarray | None = None  # flat view of the pinned host buffer


class TensorRTBackend(Backend):
    """A deserialized plan with its execution context, stream and buffers on one GPU."""

    name = "tensorrt"

    def __init__(
        self,
        path: Path,
        info: EngineInfo | None,
        *,
        device_index: int = 0,
        cuda_graph: bool = False,
        data: bytes | None = None,
    ) -> None:
        """``data``: the plan's bytes as already read (and verified); else ``path`` is read."""
        self.path = path
        self.device_index = device_index
        self._lock = threading.Lock()
        self._context: Any = None
        self._engine: Any = None
        self._allocations: list[tuple[str, Any]] = []  # (free function name, pointer)
        self._stream: Any = None
        self._graphs: dict[tuple[tuple[int, ...], ...], Any] = {}
        self._current_shapes: tuple[tuple[int, ...], ...] = ()
        self._output_shapes: list[tuple[int, ...]] = []
        self._inputs: list[_Tensor] = []
        self._outputs: list[_Tensor] = []
        self._errors: list[str] = []

        if data is None:
            data = read_plan(path)
        trt = self._trt = _import_for(info)
        self.flavour, self.version = trt.__name__, trt.__version__
        if info is not None:
            reason = engine_mismatch(info, flavour=self.flavour, version=self.version, device=None)
            if reason:
                raise BackendUnavailable(reason)
        self._logger = _make_logger(trt, self._errors)
        runtime = trt.Runtime(self._logger)
        validity = self._judge(runtime, data, info)
        self._cudart = cudart()
        self.validity = validity
        try:
            self._open(runtime, data, cuda_graph)
        except BaseException:
            self.close()
            raise

    def _judge(self, runtime: Any, data: bytes, info: EngineInfo | None) -> Validity:
        """The library's verdict and the engine's provenance against this GPU; refuse a plan
        that is malformed or built for another version or GPU."""
        trt, path = self._trt, self.path
        validity = engine_validity(trt, runtime, data)
        if validity.malformed:
            raise ModelLoadError(
                f"{self.flavour} {self.version} reports the engine {path} as malformed "
                "(truncated, corrupt or not a plan): rebuild or copy it again"
            )
        if "VERSION_MISMATCH" in validity.problems:
            raise BackendUnavailable(
                f"{path} was built by another {self.flavour} version than {self.version}: "
                f"{REBUILD_HINT}"
            )
        self.device = probe_gpus().device(self.device_index)
        if info is not None:
            reason = engine_mismatch(
                info,
                flavour=self.flavour,
                version=self.version,
                device=self.device,
                supported=supported_compute_capabilities(trt),
            )
            if reason:
                raise BackendUnavailable(reason)
        if validity.state == "invalid":
            raise BackendUnavailable(
                f"{self.flavour} {self.version} says the engine {path} cannot run on "
                f"{self.device.name} ({self.device.compute_capability}): {validity}; "
                f"{REBUILD_HINT}"
            )
        return validity

    def _open(self, runtime: Any, data: bytes, cuda_graph: bool) -> None:
        rt = self._cudart
        cuda_call(rt.cudaSetDevice(self.device_index), "cudaSetDevice")
        self._engine = engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelLoadError(
                f"{self.flavour} {self.version} could not deserialize {self.path}: "
                f"{self._error_text()}; {REBUILD_HINT}"
            )
        self._context = context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailable(
                f"{self.flavour} could not create an execution context for {self.path} "
                f"(out of GPU memory?): {self._error_text()}"
            )
        largest = self._read_io(engine, context)
        self._inputs = [
            self._allocate(s, math.prod(r[2] for r in s.all_ranges)) for s in self.inputs
        ]
        self._outputs = [self._allocate(s, math.prod(largest[s.name])) for s in self.outputs]
        for tensor in (*self._inputs, *self._outputs):
            context.set_tensor_address(tensor.spec.name, tensor.device)
        self.cuda_graph = cuda_graph
        capturable = getattr(context, "is_stream_capturable", None)
        if cuda_graph and capturable is not None and not capturable(self._stream_handle):
            log.warning(
                "%s: this engine's stream cannot be captured into a CUDA graph; running "
                "without one",
                self.path,
            )
            self.cuda_graph = False
        log.debug(
            "opened %s with %s %s on %s: inputs %s, outputs %s",
            self.path,
            self.flavour,
            self.version,
            self.device.name,
            [s.describe() for s in self.inputs],
            [s.describe() for s in self.outputs],
        )

    def _read_io(self, engine: Any, context: Any) -> dict[str, tuple[int, ...]]:
        """Set ``inputs`` and ``outputs`` from the engine; return each output's shape at the
        profile's largest input shapes (what its buffers are sized for)."""
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        shape_io = [
            n
            for n in names
            if getattr(engine, "is_shape_inference_io", None) and engine.is_shape_inference_io(n)
        ]
        if shape_io:
            raise ModelLoadError(
                f"{self.path} has shape-tensor inputs {shape_io}, which edgeport does not feed; "
                "export the model with those values as constants"
            )
        self.inputs = tuple(self._input_spec(n) for n in names if is_input[n])
        for spec in self.inputs:
            context.set_input_shape(spec.name, tuple(r[2] for r in spec.all_ranges))
        largest = {n: tuple(context.get_tensor_shape(n)) for n in names if not is_input[n]}
        dynamic = [n for n, shape in largest.items() if any(d < 0 for d in shape)]
        if dynamic:
            raise ModelLoadError(
                f"{self.path}: outputs {dynamic} have data-dependent shapes, which this runner "
                "does not allocate; run the ONNX artifact instead"
            )
        self.outputs = tuple(
            TensorSpec(n, tensor_dtype(trt, engine.get_tensor_dtype(n)).name, self._dims(n))
            for n in largest
        )
        return largest

    def _dims(self, name: str) -> tuple[int | None, ...]:
        return tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name))

    def _input_spec(self, name: str) -> TensorSpec:
        """An input's dtype, shape and, for its dynamic dimensions, optimization profile 0."""
        engine = self._engine
        dims = self._dims(name)
        ranges: tuple[tuple[int, int, int], ...] = ()
        if any(d is None for d in dims):
            low, opt, high = engine.get_tensor_profile_shape(name, 0)
            ranges = tuple((int(a), int(b), int(c)) for a, b, c in zip(low, opt, high, strict=True))
        dtype = tensor_dtype(self._trt, engine.get_tensor_dtype(name))
        return TensorSpec(name, dtype.name, dims, ranges)

    def _allocate(self, spec: TensorSpec, count: int) -> _Tensor:
        """Device and pinned host buffers for ``count`` elements of ``spec``."""
        rt = self._cudart
        if self._stream is None:
            self._stream = cuda_call(
                rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking),
                "cudaStreamCreateWithFlags",
            )
            self._stream_handle = int(self._stream)
        dtype = numpy_dtype(spec.dtype)
        nbytes = max(count, 1) * dtype.itemsize
        device = self._alloc("cudaFree", rt.cudaMalloc(nbytes), "cudaMalloc")
        host = self._alloc("cudaFreeHost", rt.cudaMallocHost(nbytes), "cudaMallocHost")
        return _Tensor(spec, dtype, count, device, _host_array(host, max(count, 1), dtype))

    def _alloc(self, free: str, result: Any, what: str) -> int:
        pointer = int(cuda_call(result, what))
        self._allocations.append((free, pointer))
        return pointer

    def _error_text(self) -> str:
        """The last errors TensorRT logged, for our messages."""
        return " | ".join(self._errors[-3:]) or "no details"

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream_handle):
            raise BackendUnavailable(
                f"{self.flavour} execute_async_v3 failed for {self.path}: {self._error_text()}"
            )

    def _capture(self, shapes: tuple[tuple[int, ...], ...]) -> Any:
        """Capture one CUDA graph for these input shapes, after one plain run (TensorRT does
        shape-dependent set-up on the first enqueue, which must not land in the graph)."""
        rt = self._cudart
        self._execute()
        cuda_call(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        cuda_call(rt.cudaStreamBeginCapture(self._stream, mode), "cudaStreamBeginCapture")
        ok = self._context.execute_async_v3(self._stream_handle)
        graph = cuda_call(rt.cudaStreamEndCapture(self._stream), "cudaStreamEndCapture")
        try:
            if not ok:
                raise BackendUnavailable(
                    f"{self.flavour} could not be captured into a CUDA graph for input shapes "
                    f"{list(shapes)}: {self._error_text()}; load without cuda_graph"
                )
            graph_exec = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            cuda_call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
        self._graphs[shapes] = graph_exec
        log.debug("captured a CUDA graph for input shapes %s", list(shapes))
        return graph_exec

    def _set_shapes(self, arrays: Sequence[np.ndarray]) -> tuple[tuple[int, ...], ...]:
        """Give the context this call's input shapes (when they changed) and learn the outputs'."""
        shapes = tuple(a.shape for a in arrays)
        if shapes == self._current_shapes:
            return shapes
        context = self._context
        for tensor, shape in zip(self._inputs, shapes, strict=True):
            if not context.set_input_shape(tensor.spec.name, shape):
                raise InputError(
                    f"{self.path} refused input {tensor.spec.name!r} of shape {shape}: "
                    f"{tensor.spec.describe()} (profile 0); {self._error_text()}"
                )
        out_shapes = [tuple(context.get_tensor_shape(t.spec.name)) for t in self._outputs]
        for tensor, shape in zip(self._outputs, out_shapes, strict=True):
            if any(d < 0 for d in shape) or math.prod(shape) > tensor.capacity:
                raise BackendUnavailable(
                    f"{self.path}: output {tensor.spec.name!r} has shape {shape} for these "
                    f"inputs, larger than its buffer ({tensor.capacity} elements, sized for the "
                    "largest input shapes); run the ONNX artifact instead"
                )
        self._current_shapes, self._output_shapes = shapes, out_shapes
        return shapes

    def infer(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        rt = self._cudart
        to_device = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            if self._context is None:
                raise ModelLoadError(f"the TensorRT engine {self.path} was closed")
            cuda_call(rt.cudaSetDevice(self.device_index), "cudaSetDevice")  # per host thread
            shapes = self._set_shapes(arrays)
            for tensor, array in zip(self._inputs, arrays, strict=True):
                host = tensor.host[: array.size]  # type: ignore[index]
                np.copyto(host, array.reshape(-1))
                self._copy(tensor.device, host.ctypes.data, host.nbytes, to_device)
            graph_exec = self._graphs.get(shapes) if self.cuda_graph else None
            if self.cuda_graph and graph_exec is None:
                try:
                    graph_exec = self._capture(shapes)
                except BackendUnavailable as exc:
                    log.warning("%s: no CUDA graph, running without one: %s", self.path, exc)
                    self.cuda_graph = False
            if graph_exec is not None:
                cuda_call(rt.cudaGraphLaunch(graph_exec, self._stream), "cudaGraphLaunch")
            else:
                self._execute()
            outs = []
            for tensor, shape in zip(self._outputs, self._output_shapes, strict=True):
                host = tensor.host[: math.prod(shape)]  # type: ignore[index]
                self._copy(host.ctypes.data, tensor.device, host.nbytes, to_host)
                outs.append((host, shape))
            cuda_call(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            return [host.reshape(shape).copy() for host, shape in outs]  # pinned buffers are reused

    def _copy(self, dst: int, src: int, nbytes: int, kind: Any) -> None:
        """Enqueue one copy between device memory and pinned host memory on the stream."""
        cuda_call(
            self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream), "cudaMemcpyAsync"
        )

    def close(self) -> None:
        with self._lock:
            rt = getattr(self, "_cudart", None)
            if self._stream is not None and rt is not None:
                try:
                    cuda_call(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
                except BackendUnavailable as exc:
                    log.warning("closing %s: %s", self.path, exc)
            for graph_exec in self._graphs.values():
                self._release(rt, "cudaGraphExecDestroy", graph_exec)
            self._graphs.clear()
            self._context = None  # the context uses the buffers: drop it before freeing them
            self._engine = None
            for tensor in (*self._inputs, *self._outputs):
                tensor.host = None
            for free, pointer in reversed(self._allocations):
                self._release(rt, free, pointer)
            self._allocations.clear()
            if self._stream is not None:
                self._release(rt, "cudaStreamDestroy", self._stream)
                self._stream = None

    def _release(self, rt: Any, function: str, handle: Any) -> None:
        if rt is None:
            return
        try:
            cuda_call(getattr(rt, function)(handle), function)
        except BackendUnavailable as exc:
            log.warning("closing %s: %s", self.path, exc)

    def describe(self) -> dict[str, Any]:
        return {
            "library": f"{self.flavour} {self.version}",
            "device": f"cuda:{self.device_index} ({self.device.name}, "
            f"compute capability {self.device.compute_capability})",
            "engine_validity": str(self.validity),
            "cuda_graph": self.cuda_graph,
            "cuda_graph_batches": sorted(self._graphs),
            "stream": "one per model",
            "buffers": "device + pinned host per tensor, sized for the profile's largest shapes",
            "thread_safety": "one lock per model",
        }


def _open(request: OpenRequest) -> Backend:
    return TensorRTBackend(
        request.model.path,
        request.file.engine,
        device_index=request.device_index,
        cuda_graph=request.cuda_graph,
        data=request.model.data,
    )


def _profiler(name: str, file: ModelFile, threads: int | None) -> Profile:
    from edgeport.runtime.tools.profile import profile_tensorrt  # the tools' profiling code

    return lambda arrays, config: profile_tensorrt(file.path, file.engine, arrays, config)


# On GPUs, TensorRT's int8 and fp16 kernels beat fp32: fastest first.
SPECS = (
    BackendSpec(
        name="tensorrt",
        formats=("tensorrt",),
        target="tensorrt",
        device="cuda",
        precisions=("int8", "fp16", "fp32"),
        unavailable=lambda file, device: static_unavailable_reason(
            file.engine if file else None, device
        ),
        open=_open,
        profiler=_profiler,
        packages=("tensorrt", "tensorrt-rtx-cu13"),
        per_file=True,
        threads=False,
    ),
)
