"""The TensorRT backend: a serialized plan run with ``execute_async_v3``.

Works with full TensorRT 10/11 (module ``tensorrt``) and TensorRT-RTX (module ``tensorrt_rtx``),
which share this API. Device and pinned host buffers come from ``cuda-python``; each model owns
one CUDA stream, buffers sized for the largest batch of the engine's optimization profile, and
(optionally) one CUDA graph per batch size.

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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend, TensorSpec
from edgeport.runtime.backends.cuda import GpuDevice, cuda_call, cudart, probe_gpus
from edgeport.runtime.bundle import ENGINE_FLAVOURS, EngineInfo
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    InputError,
    ModelLoadError,
)

log = logging.getLogger(__name__)

FLAVOURS = ENGINE_FLAVOURS  # full TensorRT first
_INSTALL = {
    "tensorrt": "pip install 'edgeport-runtime[tensorrt]' (full TensorRT 10/11 and cuda-python)",
    "tensorrt_rtx": "pip install tensorrt-rtx-cu13 cuda-python (TensorRT for RTX)",
}
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
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ModelLoadError(f"engine file not found: {path}") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot read engine file {path}: {exc}") from exc
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


def _host_array(pointer: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = math.prod(shape) * dtype.itemsize
    buffer = (ctypes.c_byte * nbytes).from_address(pointer)
    return np.frombuffer(memoryview(buffer), dtype=dtype).reshape(shape)


class TensorRTBackend(Backend):
    """A deserialized plan with its execution context, stream and buffers on one GPU."""

    name = "tensorrt"
    batch_limits: tuple[int, int, int]

    def __init__(
        self,
        path: Path,
        info: EngineInfo | None,
        *,
        device_index: int = 0,
        cuda_graph: bool = False,
    ) -> None:
        self.path = path
        self.device_index = device_index
        self._lock = threading.Lock()
        self._context: Any = None
        self._engine: Any = None
        self._allocations: list[tuple[str, Any]] = []  # (free function name, pointer)
        self._stream: Any = None
        self._graphs: dict[int, Any] = {}
        self._current_batch = -1
        self._errors: list[str] = []

        data = read_plan(path)
        trt = self._trt = _import_for(info)
        self.flavour, self.version = trt.__name__, trt.__version__
        if info is not None:
            reason = engine_mismatch(info, flavour=self.flavour, version=self.version, device=None)
            if reason:
                raise BackendUnavailable(reason)
        self._logger = _make_logger(trt, self._errors)
        runtime = trt.Runtime(self._logger)
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
        self.device = probe_gpus().device(device_index)
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
        self._cudart = cudart()
        self.validity = validity
        try:
            self._open(runtime, data, cuda_graph)
        except BaseException:
            self.close()
            raise

    def _open(self, runtime: Any, data: bytes, cuda_graph: bool) -> None:
        trt, rt = self._trt, self._cudart
        cuda_call(rt.cudaSetDevice(self.device_index), "cudaSetDevice")
        self._engine = engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise ModelLoadError(
                f"{self.flavour} {self.version} could not deserialize {self.path}: "
                f"{self._error_text()}; {REBUILD_HINT}"
            )
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"{self.path} has inputs {inputs} and outputs {outputs}; edgeport runs "
                "classifiers with exactly one input and one output"
            )
        in_name, out_name = inputs[0], outputs[0]
        in_shape = tuple(engine.get_tensor_shape(in_name))
        out_shape = tuple(engine.get_tensor_shape(out_name))
        if len(in_shape) != 4 or any(d < 0 for d in in_shape[1:]):
            raise ModelLoadError(
                f"{self.path}: input {in_name} has shape {in_shape}; edgeport needs NCHW with "
                "fixed C, H, W (only the batch axis may be dynamic)"
            )
        if in_shape[0] < 0:
            low, opt, high = engine.get_tensor_profile_shape(in_name, 0)
            self.batch_limits = (int(low[0]), int(opt[0]), int(high[0]))
        else:
            self.batch_limits = (in_shape[0],) * 3
        if len(out_shape) != 2 or out_shape[1] < 0:
            raise ModelLoadError(
                f"{self.path}: output {out_name} has shape {out_shape}; expected (batch, classes)"
            )
        self._chw = tuple(int(d) for d in in_shape[1:])
        self._classes = int(out_shape[1])
        in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(in_name)))
        out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(out_name)))
        self.input = TensorSpec(
            in_name, in_dtype.name, ("batch" if in_shape[0] < 0 else in_shape[0], *self._chw)
        )
        self.output = TensorSpec(
            out_name, out_dtype.name, ("batch" if in_shape[0] < 0 else in_shape[0], self._classes)
        )

        max_batch = self.batch_limits[2]
        in_bytes = max_batch * math.prod(self._chw) * in_dtype.itemsize
        out_bytes = max_batch * self._classes * out_dtype.itemsize
        self._stream = cuda_call(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        self._stream_handle = int(self._stream)
        self._d_in = self._alloc("cudaFree", rt.cudaMalloc(in_bytes), "cudaMalloc")
        self._d_out = self._alloc("cudaFree", rt.cudaMalloc(out_bytes), "cudaMalloc")
        self._h_in = self._alloc("cudaFreeHost", rt.cudaMallocHost(in_bytes), "cudaMallocHost")
        self._h_out = self._alloc("cudaFreeHost", rt.cudaMallocHost(out_bytes), "cudaMallocHost")
        self._host_in = _host_array(self._h_in, (max_batch, *self._chw), in_dtype)
        self._host_out = _host_array(self._h_out, (max_batch, self._classes), out_dtype)
        self._context = context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailable(
                f"{self.flavour} could not create an execution context for {self.path} "
                f"(out of GPU memory?): {self._error_text()}"
            )
        context.set_tensor_address(in_name, self._d_in)
        context.set_tensor_address(out_name, self._d_out)
        self._in_name, self._out_name = in_name, out_name
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
            "opened %s with %s %s on %s (batch %s, buffers %d + %d bytes)",
            self.path,
            self.flavour,
            self.version,
            self.device.name,
            self.batch_limits,
            in_bytes,
            out_bytes,
        )

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

    def _capture(self, batch: int) -> Any:
        """Capture one CUDA graph for ``batch``, after one plain run (TensorRT does shape-
        dependent set-up on the first enqueue, which must not land in the graph)."""
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
                    f"{self.flavour} could not be captured into a CUDA graph for batch {batch}: "
                    f"{self._error_text()}; load without cuda_graph"
                )
            graph_exec = cuda_call(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            cuda_call(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")
        self._graphs[batch] = graph_exec
        log.debug("captured a CUDA graph for batch %d", batch)
        return graph_exec

    def run(self, batch: np.ndarray) -> np.ndarray:
        rt = self._cudart
        n = batch.shape[0]
        with self._lock:
            context = self._context
            if context is None:
                raise ModelLoadError(f"the TensorRT engine {self.path} was closed")
            cuda_call(rt.cudaSetDevice(self.device_index), "cudaSetDevice")  # per host thread
            if n != self._current_batch:
                if not context.set_input_shape(self._in_name, (n, *self._chw)):
                    raise InputError(
                        f"{self.path} accepts batch {self.batch_limits[0]}..{self.batch_limits[2]}"
                        f" of {self._chw}, got {batch.shape}"
                    )
                self._current_batch = n
            host_in = self._host_in[:n]
            np.copyto(host_in, batch, casting="same_kind")
            kind = rt.cudaMemcpyKind
            cuda_call(
                rt.cudaMemcpyAsync(
                    self._d_in,
                    self._h_in,
                    host_in.nbytes,
                    kind.cudaMemcpyHostToDevice,
                    self._stream,
                ),
                "cudaMemcpyAsync",
            )
            graph_exec = self._graphs.get(n) if self.cuda_graph else None
            if self.cuda_graph and graph_exec is None:
                try:
                    graph_exec = self._capture(n)
                except BackendUnavailable as exc:
                    log.warning("%s: no CUDA graph, running without one: %s", self.path, exc)
                    self.cuda_graph = False
            if graph_exec is not None:
                cuda_call(rt.cudaGraphLaunch(graph_exec, self._stream), "cudaGraphLaunch")
            else:
                self._execute()
            host_out = self._host_out[:n]
            cuda_call(
                rt.cudaMemcpyAsync(
                    self._h_out,
                    self._d_out,
                    host_out.nbytes,
                    kind.cudaMemcpyDeviceToHost,
                    self._stream,
                ),
                "cudaMemcpyAsync",
            )
            cuda_call(rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
            return host_out.astype(np.float32)  # a copy: the pinned buffer is reused

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
            self._host_in = self._host_out = None  # type: ignore[assignment]
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
            "buffers": "device + pinned host, sized for the profile's max batch",
            "thread_safety": "one lock per model",
        }
