"""ONNX Runtime backends: CPU, CUDA (with IOBinding and optional CUDA graphs) and TensorRT EP.

Session options are chosen on purpose:

- ``graph_optimization_level = ORT_ENABLE_ALL``: constant folding, Conv+BN/activation fusion and,
  on CPU, the NCHWc layout transforms. This is ORT's default too; it is set explicitly so a
  change of default upstream cannot change our numbers silently.
- ``execution_mode = ORT_SEQUENTIAL`` with ``inter_op_num_threads = 1``: a CNN is one chain of
  operators, so parallelism comes from ``intra_op_num_threads`` (``threads``; ``None`` keeps
  ORT's default, one thread per physical core).
- CUDA: ``cudnn_conv_algo_search = HEURISTIC`` (the default ``EXHAUSTIVE`` benchmarks every
  convolution algorithm on the first call of each shape, which makes that call seconds long),
  inputs and outputs bound on the device with IOBinding (one host-to-device copy in, one
  device-to-host copy out, nothing else), and ``enable_cuda_graph`` for fixed shapes.

ONNX Runtime sessions are thread-safe for ``run``; each call makes its own IOBinding. Only the
CUDA graph path shares device buffers between calls and therefore takes a lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend, TensorSpec
from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    EdgeportError,
    InputError,
    ModelLoadError,
)

log = logging.getLogger(__name__)

PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}
_EXTRA = {
    "onnxruntime-cpu": "pip install 'edgeport-runtime[cpu]'",
    "onnxruntime-cuda": "pip install 'edgeport-runtime[gpu]' (and not onnxruntime beside it)",
    "onnxruntime-tensorrt": "pip install 'edgeport-runtime[gpu]' with TensorRT libraries",
}
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
# Errors that mean the file itself is bad, whatever the provider.
_MODEL_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel", "NotImplemented")


def import_onnxruntime(backend: str = "onnxruntime-cpu") -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            f"{backend} needs onnxruntime, which is not installed: {_EXTRA[backend]}"
        ) from exc
    return onnxruntime


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception classes ONNX Runtime raises (none of them derive from RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [
        obj for obj in vars(state).values() if isinstance(obj, type) and issubclass(obj, Exception)
    ]
    return (*found, RuntimeError)


def unavailable_reason(backend: str, device_index: int = 0) -> str | None:
    """Why ``backend`` cannot run on this machine, or None when it can (no model is opened)."""
    try:
        ort = import_onnxruntime(backend)
    except BackendUnavailable as exc:
        return str(exc)
    provider = PROVIDERS[backend]
    available = ort.get_available_providers()
    if provider not in available:
        return (
            f"this onnxruntime {ort.__version__} has no {provider} "
            f"(it has {', '.join(available)}): {_EXTRA[backend]}"
        )
    if backend != "onnxruntime-cpu":
        try:
            probe_gpus().device(device_index)
        except BackendUnavailable as exc:
            return str(exc)
    return None


@dataclass(frozen=True)
class OrtSettings:
    """How to open a session (``precision`` and the profile matter only for the TensorRT EP)."""

    threads: int | None = None
    device_index: int = 0
    cuda_graph: bool = False
    precision: str = "fp32"
    tensorrt_profile: dict[str, str] | None = None  # see tensorrt_profile_options
    num_classes: int | None = None  # used when the file's class axis is symbolic


class OnnxRuntimeBackend(Backend):
    """One ``InferenceSession`` on the CPU, CUDA or TensorRT execution provider."""

    def __init__(self, path: Path, backend: str, settings: OrtSettings) -> None:
        if backend not in PROVIDERS:
            raise ConfigError(f"not an onnxruntime backend: {backend!r}; one of {list(PROVIDERS)}")
        if settings.threads is not None and settings.threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {settings.threads}")
        reason = unavailable_reason(backend, settings.device_index)
        if reason is not None:
            raise BackendUnavailable(f"{backend}: {reason}")
        self.name = backend
        self.path = path
        self.settings = settings
        self._ort = ort = import_onnxruntime(backend)
        self._on_gpu = backend != "onnxruntime-cpu"
        self._device_type = "cuda"  # where IOBinding puts inputs and outputs on the GPU paths
        self._lock = threading.Lock()
        self._graph_state: tuple[int, Any, Any, Any] | None = None  # (batch, binding, x, y)
        if self._on_gpu and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when they are installed
        self._session = self._open_session(ort, path, backend, settings)
        self._errors = ort_errors()
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"{path} has inputs {[i.name for i in inputs]} and outputs "
                f"{[o.name for o in outputs]}; edgeport runs classifiers with exactly one input "
                "(the image batch) and one output (the logits)"
            )
        self.input = _spec(inputs[0])
        self.output = _spec(outputs[0])
        for spec in (self.input, self.output):
            if spec.dtype not in ("float32", "float16"):
                raise ModelLoadError(
                    f"{path}: {spec.name} has type {spec.dtype}; edgeport expects float32 or "
                    "float16 image batches and logits"
                )
        self._input_dtype = np.dtype(self.input.dtype)
        self._cast_input = self._input_dtype != np.float32
        self._cast_output = self.output.dtype != "float32"
        self._output_names = [self.output.name]
        self._session_run: Any = _cpu_run_function(ort, self._session)
        batch_dim = self.input.shape[0] if self.input.shape else None
        self.batch_limits = (batch_dim,) * 3 if isinstance(batch_dim, int) else None
        self._num_classes = (
            self.output.shape[1]
            if len(self.output.shape) == 2 and isinstance(self.output.shape[1], int)
            else settings.num_classes
        )
        if settings.cuda_graph and self._num_classes is None:
            raise ConfigError(
                f"{path}: the logits' class axis is symbolic and no model card gives the class "
                "count; a CUDA graph needs fixed output shapes"
            )
        log.debug("opened %s with %s: %s", path, backend, self._session.get_providers())

    # -- opening -----------------------------------------------------------------------------

    def _open_session(
        self, ort: ModuleType, path: Path, backend: str, settings: OrtSettings
    ) -> Any:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = settings.threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; ORT's warnings go nowhere useful here
        providers = self._providers(backend, settings)
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except ort_errors() as exc:
            kind = type(exc).__name__
            if kind in _MODEL_ERRORS or backend == "onnxruntime-cpu":
                raise ModelLoadError(f"onnxruntime cannot load {path}: {kind}: {exc}") from exc
            raise BackendUnavailable(
                f"{backend} cannot open {path}: {kind}: {exc}; check the CUDA, cuDNN (and "
                "TensorRT) libraries that onnxruntime-gpu needs"
            ) from exc
        active = session.get_providers()
        wanted = PROVIDERS[backend]
        if not active or active[0] != wanted:
            raise BackendUnavailable(
                f"{backend}: onnxruntime fell back to {active} instead of {wanted} (the provider "
                "failed to initialise: missing CUDA/cuDNN/TensorRT libraries or no GPU)"
            )
        return session

    def _providers(self, backend: str, settings: OrtSettings) -> list[Any]:
        if backend == "onnxruntime-cpu":
            return ["CPUExecutionProvider"]
        cuda_options = {
            "device_id": str(settings.device_index),
            "cudnn_conv_algo_search": "HEURISTIC",
            "do_copy_in_default_stream": "1",
            "enable_cuda_graph": "1" if settings.cuda_graph else "0",
            # TF32 matmuls/convolutions round inputs to 10 mantissa bits: fine for fp16/int8
            # artifacts, but an fp32 artifact must stay fp32 to meet its parity tolerance.
            "use_tf32": "0" if settings.precision == "fp32" else "1",
        }
        providers: list[Any] = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
        if backend == "onnxruntime-tensorrt":
            trt_options = {
                "device_id": str(settings.device_index),
                "trt_fp16_enable": "1" if settings.precision in ("fp16", "int8") else "0",
                "trt_int8_enable": "1" if settings.precision == "int8" else "0",
                "trt_engine_cache_enable": "0",
                "trt_cuda_graph_enable": "1" if settings.cuda_graph else "0",
                **(settings.tensorrt_profile or {}),
            }
            providers.insert(0, ("TensorrtExecutionProvider", trt_options))
        return providers

    # -- running -----------------------------------------------------------------------------

    def run(self, batch: np.ndarray) -> np.ndarray:
        # Both read once: a close() from another thread cannot leave one of them None mid-call.
        session, session_run = self._session, self._session_run
        if session is None or session_run is None:
            raise ModelLoadError(f"the {self.name} session for {self.path} was closed")
        if self._cast_input:
            batch = batch.astype(self._input_dtype)
        try:
            if not self._on_gpu:
                out = session_run(self._output_names, {self.input.name: batch}, None)[0]
            elif self.settings.cuda_graph:
                out = self._run_cuda_graph(session, batch)
            else:
                out = self._run_bound(session, batch)
        except EdgeportError:
            raise
        except self._errors as exc:
            kind = type(exc).__name__
            if kind == "InvalidArgument":
                raise InputError(f"{self.name} refused the batch {batch.shape}: {exc}") from exc
            raise BackendUnavailable(f"{self.name} failed while running: {kind}: {exc}") from exc
        return out.astype(np.float32) if self._cast_output else out

    def _run_bound(self, session: Any, batch: np.ndarray) -> np.ndarray:
        """Input copied once to the device, output allocated there by ORT, copied back once."""
        ort, index = self._ort, self.settings.device_index
        binding = session.io_binding()
        device_input = ort.OrtValue.ortvalue_from_numpy(batch, self._device_type, index)
        binding.bind_ortvalue_input(self.input.name, device_input)
        if self._num_classes is not None:
            device_output = ort.OrtValue.ortvalue_from_shape_and_type(
                (batch.shape[0], self._num_classes),
                np.dtype(self.output.dtype),
                self._device_type,
                index,
            )
            binding.bind_ortvalue_output(self.output.name, device_output)
        else:
            binding.bind_output(self.output.name, self._device_type, index)
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy()

    def _run_cuda_graph(self, session: Any, batch: np.ndarray) -> np.ndarray:
        """Replay one captured CUDA graph: the device buffers must stay the same, so they are
        allocated once, refilled in place under a lock, and the batch size is fixed by the first
        call."""
        ort, index = self._ort, self.settings.device_index
        with self._lock:
            if self._graph_state is None:
                device_input = ort.OrtValue.ortvalue_from_numpy(batch, self._device_type, index)
                device_output = ort.OrtValue.ortvalue_from_shape_and_type(
                    (batch.shape[0], self._num_classes),
                    np.dtype(self.output.dtype),
                    self._device_type,
                    index,
                )
                binding = session.io_binding()
                binding.bind_ortvalue_input(self.input.name, device_input)
                binding.bind_ortvalue_output(self.output.name, device_output)
                self._graph_state = (batch.shape[0], binding, device_input, device_output)
            else:
                fixed, binding, device_input, device_output = self._graph_state
                if batch.shape[0] != fixed:
                    raise InputError(
                        f"this model was loaded with cuda_graph=True and captured its graph for "
                        f"batch {fixed}; got batch {batch.shape[0]}. Load it without cuda_graph "
                        "to vary the batch size"
                    )
                device_input.update_inplace(batch)
            session.run_with_iobinding(binding)
            return device_output.numpy()

    def close(self) -> None:
        with self._lock:
            self._graph_state = None
            self._session = self._session_run = None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "library": f"onnxruntime {self._ort.__version__}",
            "providers": self._session.get_providers() if self._session else [],
            "graph_optimization_level": "ORT_ENABLE_ALL",
            "intra_op_threads": self.settings.threads or "onnxruntime default",
        }
        if self._on_gpu:
            info.update(
                device=f"cuda:{self.settings.device_index}",
                io_binding=True,
                cudnn_conv_algo_search="HEURISTIC",
                tf32=self.settings.precision != "fp32",
                cuda_graph=self.settings.cuda_graph,
            )
        return info


def tensorrt_profile_options(
    input_name: str, chw: tuple[int, int, int], batch: tuple[int, int, int]
) -> dict[str, str]:
    """TensorRT EP optimization-profile options for a dynamic batch axis."""
    c, h, w = chw
    low, opt, high = batch
    return {
        "trt_profile_min_shapes": f"{input_name}:{low}x{c}x{h}x{w}",
        "trt_profile_opt_shapes": f"{input_name}:{opt}x{c}x{h}x{w}",
        "trt_profile_max_shapes": f"{input_name}:{high}x{c}x{h}x{w}",
    }


def _cpu_run_function(ort: ModuleType, session: Any) -> Any:
    """The fastest correct ``run(output_names, feed, run_options)`` for the CPU path.

    ``Model.run`` has already checked the batch (one input, its name, float32, shape, finite), so
    this calls the C++ session that ``InferenceSession`` wraps, skipping ``InferenceSession.run``'s
    Python-level second checks (feed names, OrtValue ownership, WebGPU graph capture) and its
    execution-provider fallback, none of which apply to one numpy input on the CPU provider. That
    saves 1-4 us per call, the largest part of ``Model.run``'s overhead over a bare session on the
    small CNN (``benchmarks/runtime_overhead.py``, bar 5%). Private API, so it is taken only when
    ``_sess`` is the pybind ``InferenceSession`` whose ``run`` has had this signature since ORT 1.0;
    otherwise the public method.
    """
    native = getattr(getattr(ort, "capi", None), "_pybind_state", None)
    native_session = getattr(native, "InferenceSession", None)
    inner = getattr(session, "_sess", None)
    if not (isinstance(native_session, type) and isinstance(inner, native_session)):
        return session.run
    return session._sess.run


def _spec(node: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int | str) else None for d in node.shape)
    return TensorSpec(name=node.name, dtype=_ORT_TYPES.get(node.type, node.type), shape=shape)
