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

Any number of inputs and outputs of any tensor type ONNX Runtime's Python API takes are run;
bfloat16, which numpy lacks, travels as ``ml_dtypes.bfloat16`` through ``OrtValue``s.

ONNX Runtime sessions are thread-safe for ``run``; each call makes its own IOBinding. Only the
CUDA graph path shares device buffers between calls and therefore takes a lock.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend, ModelBytes, concrete_shape, symbol_sizes
from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.backends.spec import BackendSpec, ModelFile, OpenRequest, Profile
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    EdgeportError,
    InputError,
    ModelLoadError,
)
from edgeport.runtime.specs import TensorSpec, numpy_dtype

log = logging.getLogger(__name__)

PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}
CPU = "CPUExecutionProvider"
_EXTRA = {  # by provider
    CPU: "pip install 'edgeport-runtime[cpu]'",
    "CUDAExecutionProvider": "pip install 'edgeport-runtime[gpu]' (and not onnxruntime beside it)",
    "TensorrtExecutionProvider": "pip install 'edgeport-runtime[gpu]' with TensorRT libraries",
}
_LEVELS = {  # OrtSettings.optimization -> GraphOptimizationLevel
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
OPTIMIZATION_LEVELS = tuple(_LEVELS)
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(bfloat16)": "bfloat16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}
_BFLOAT16 = 16  # onnx.TensorProto.BFLOAT16
# Errors that mean the file itself is bad, whatever the provider.
_MODEL_ERRORS = ("InvalidProtobuf", "InvalidGraph", "NoSuchFile", "NoModel", "NotImplemented")


def import_onnxruntime(backend: str = "onnxruntime-cpu", provider: str | None = None) -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            f"{backend} needs onnxruntime, which is not installed: {_install(backend, provider)}"
        ) from exc
    return onnxruntime


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception classes ONNX Runtime raises (none of them derive from RuntimeError)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    found = [
        obj for obj in vars(state).values() if isinstance(obj, type) and issubclass(obj, Exception)
    ]
    return (*found, RuntimeError)


def _install(backend: str, provider: str | None) -> str:
    return _EXTRA.get(provider or PROVIDERS.get(backend, CPU), _EXTRA[CPU])


def unavailable_reason(
    backend: str, device_index: int = 0, provider: str | None = None
) -> str | None:
    """Why ``backend`` (on ``provider``, by default its own) cannot run on this machine, or None
    when it can (no model is opened)."""
    try:
        ort = import_onnxruntime(backend, provider)
    except BackendUnavailable as exc:
        return str(exc)
    provider = provider or PROVIDERS[backend]
    available = ort.get_available_providers()
    if provider not in available:
        return (
            f"this onnxruntime {ort.__version__} has no {provider} "
            f"(it has {', '.join(available)}): {_install(backend, provider)}"
        )
    if provider != CPU:
        try:
            probe_gpus().device(device_index)
        except BackendUnavailable as exc:
            return str(exc)
    return None


@dataclass(frozen=True)
class OrtSettings:
    """How to open a session (``precision`` and the profile matter only for the TensorRT EP).
    ``provider``: the execution provider, None for the backend's own (:data:`PROVIDERS`);
    ``optimization``: the graph optimization level, one of :data:`OPTIMIZATION_LEVELS`."""

    threads: int | None = None
    device_index: int = 0
    cuda_graph: bool = False
    precision: str = "fp32"
    tensorrt_profile: dict[str, str] | None = None  # see tensorrt_profile_options
    provider: str | None = None
    optimization: str = "all"


class OnnxRuntimeBackend(Backend):
    """One ``InferenceSession`` on the CPU, CUDA or TensorRT execution provider."""

    def __init__(self, model: ModelBytes, backend: str, settings: OrtSettings) -> None:
        provider = settings.provider or PROVIDERS.get(backend)
        if provider is None:
            raise ConfigError(
                f"not an onnxruntime backend: {backend!r}; one of {list(PROVIDERS)}, or give "
                "OrtSettings.provider"
            )
        if settings.threads is not None and settings.threads < 1:
            raise ConfigError(f"threads must be >= 1 or None, got {settings.threads}")
        if settings.optimization not in OPTIMIZATION_LEVELS:
            raise ConfigError(
                f"optimization must be one of {OPTIMIZATION_LEVELS}, got {settings.optimization!r}"
            )
        reason = unavailable_reason(backend, settings.device_index, provider)
        if reason is not None:
            raise BackendUnavailable(f"{backend}: {reason}")
        self.name = backend
        self.provider = provider
        self.path = path = model.path
        self.settings = settings
        self._ort = ort = import_onnxruntime(backend, provider)
        self._on_gpu = provider != CPU
        self._device_type = "cuda"  # where IOBinding puts inputs and outputs on the GPU paths
        self._lock = threading.Lock()
        self._graph_state: tuple[Any, ...] | None = None  # (shapes, binding, inputs, outputs)
        if self._on_gpu and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the nvidia-* wheels, when they are installed
        self._session = self._open_session(ort, model, backend, settings)
        self._errors = ort_errors()
        self.inputs = tuple(_spec(path, node, "input") for node in self._session.get_inputs())
        self.outputs = tuple(_spec(path, node, "output") for node in self._session.get_outputs())
        self._input_names = [spec.name for spec in self.inputs]
        self._output_names = [spec.name for spec in self.outputs]
        self._bf16_in = {s.name for s in self.inputs if s.dtype == "bfloat16"}
        self._bf16_out = [s.dtype == "bfloat16" for s in self.outputs]
        self._plain = not (self._bf16_in or any(self._bf16_out))  # numpy in and out as is
        self._session_run: Any = _cpu_run_function(ort, self._session)
        if settings.cuda_graph and not self._on_gpu:
            raise ConfigError(f"{backend} has no CUDA graphs; load with cuda_graph=False")
        log.debug("opened %s with %s: %s", path, backend, self._session.get_providers())

    # -- opening -----------------------------------------------------------------------------

    def _open_session(
        self, ort: ModuleType, model: ModelBytes, backend: str, settings: OrtSettings
    ) -> Any:
        """A session on the model's bytes (never its path again: what was verified runs);
        external-data weights are looked up in the model's directory."""
        path = model.path
        options = ort.SessionOptions()
        level = _LEVELS[settings.optimization]
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = settings.threads or 0
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only; ORT's warnings go nowhere useful here
        if model.summary is not None and model.summary.external_data:
            options.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(path.parent)
            )
        providers = self._providers(backend, settings)
        try:
            session = ort.InferenceSession(model.data, sess_options=options, providers=providers)
        except UnicodeDecodeError as exc:  # ORT's message quoted bytes of a damaged file
            raise ModelLoadError(
                f"onnxruntime cannot load {path}: it failed with a message that is not UTF-8 "
                f"text ({exc.reason}), as when it quotes the bytes of a damaged file"
            ) from exc
        except ort_errors() as exc:
            kind = type(exc).__name__
            if kind in _MODEL_ERRORS or not self._on_gpu:
                raise ModelLoadError(f"onnxruntime cannot load {path}: {kind}: {exc}") from exc
            raise BackendUnavailable(
                f"{backend} cannot open {path}: {kind}: {exc}; check the CUDA, cuDNN (and "
                "TensorRT) libraries that onnxruntime-gpu needs"
            ) from exc
        active = session.get_providers()
        wanted = self.provider
        if not active or active[0] != wanted:
            raise BackendUnavailable(
                f"{backend}: onnxruntime fell back to {active} instead of {wanted} (the provider "
                "failed to initialise: missing CUDA/cuDNN/TensorRT libraries or no GPU)"
            )
        return session

    def _providers(self, backend: str, settings: OrtSettings) -> list[Any]:
        if not self._on_gpu:
            return [self.provider]
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
        if self.provider == "TensorrtExecutionProvider":
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

    def infer(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        # Both read once: a close() from another thread cannot leave one of them None mid-call.
        session, session_run = self._session, self._session_run
        if session is None or session_run is None:
            raise ModelLoadError(f"the {self.name} session for {self.path} was closed")
        try:
            if self._on_gpu:
                if self.settings.cuda_graph:
                    return self._run_cuda_graph(session, arrays)
                return self._run_bound(session, arrays)
            if not self._plain:
                return self._run_ort_values(session, arrays)
            return session_run(
                self._output_names, dict(zip(self._input_names, arrays, strict=True)), None
            )
        except EdgeportError:
            raise
        except self._errors as exc:
            kind = type(exc).__name__
            shapes = ", ".join(
                f"{n} {a.shape}" for n, a in zip(self._input_names, arrays, strict=True)
            )
            if kind == "InvalidArgument":
                raise InputError(f"{self.name} refused the inputs ({shapes}): {exc}") from exc
            if kind in ("Fail", "RuntimeException"):
                raise InputError(
                    f"{self.name} failed on the inputs ({shapes}): {exc}; the model may need "
                    "other sizes for its dynamic dimensions"
                ) from exc
            raise BackendUnavailable(f"{self.name} failed while running: {kind}: {exc}") from exc

    def _value(self, name: str, array: np.ndarray, device: str = "cpu") -> Any:
        """An OrtValue of ``array`` (on ``device``), bfloat16 passed as its bits."""
        ort, index = self._ort, self.settings.device_index
        if name in self._bf16_in:
            return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                array.view(np.uint16), onnx_element_type=_BFLOAT16
            )
        return ort.OrtValue.ortvalue_from_numpy(array, device, index)

    def _outputs(self, values: Sequence[Any]) -> list[np.ndarray]:
        return [
            _bfloat16_array(v) if bf16 else v.numpy()
            for v, bf16 in zip(values, self._bf16_out, strict=True)
        ]

    def _run_ort_values(self, session: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        feeds = {n: self._value(n, a) for n, a in zip(self._input_names, arrays, strict=True)}
        return self._outputs(session.run_with_ort_values(self._output_names, feeds, None))

    def _run_bound(self, session: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Inputs copied once to the device, outputs allocated there, copied back once each."""
        binding = session.io_binding()
        for name, array in zip(self._input_names, arrays, strict=True):
            binding.bind_ortvalue_input(name, self._value(name, array, self._device_type))
        for name in self._output_names:
            binding.bind_output(name, self._device_type, self.settings.device_index)
        session.run_with_iobinding(binding)
        return self._outputs(binding.get_outputs())

    def _run_cuda_graph(self, session: Any, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Replay one captured CUDA graph: the device buffers must stay the same, so they are
        allocated once (outputs at the shapes the first call's inputs imply), refilled in place
        under a lock, and the input shapes are fixed by the first call."""
        with self._lock:
            if self._graph_state is None:
                self._graph_state = self._capture_buffers(session, arrays)
            shapes, binding, device_inputs, device_outputs = self._graph_state
            got = tuple(a.shape for a in arrays)
            if got != shapes:
                raise InputError(
                    f"this model was loaded with cuda_graph=True and captured its graph for "
                    f"input shapes {list(shapes)}; got {list(got)}. Load it without cuda_graph "
                    "to vary the shapes"
                )
            for value, array in zip(device_inputs, arrays, strict=True):
                value.update_inplace(array)
            session.run_with_iobinding(binding)
            return self._outputs(device_outputs)

    def _capture_buffers(self, session: Any, arrays: Sequence[np.ndarray]) -> tuple[Any, ...]:
        ort, index, device = self._ort, self.settings.device_index, self._device_type
        sizes = symbol_sizes(self.inputs, arrays)
        binding = session.io_binding()
        device_inputs = []
        for name, array in zip(self._input_names, arrays, strict=True):
            value = self._value(name, array, device)
            binding.bind_ortvalue_input(name, value)
            device_inputs.append(value)
        device_outputs = []
        for spec in self.outputs:
            shape = concrete_shape(spec, sizes)
            if shape is None:
                raise ConfigError(
                    f"{self.path}: output {spec.name!r} has shape {list(spec.shape)}, which the "
                    "input shapes do not determine; a CUDA graph needs fixed output shapes. Load "
                    "it without cuda_graph"
                )
            value = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, numpy_dtype(spec.dtype), device, index
            )
            binding.bind_ortvalue_output(spec.name, value)
            device_outputs.append(value)
        shapes = tuple(a.shape for a in arrays)
        return shapes, binding, device_inputs, device_outputs

    def close(self) -> None:
        with self._lock:
            self._graph_state = None
            self._session = self._session_run = None

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "library": f"onnxruntime {self._ort.__version__}",
            "providers": self._session.get_providers() if self._session else [],
            "graph_optimization_level": _LEVELS[self.settings.optimization],
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


def tensorrt_profile_options(specs: Sequence[TensorSpec]) -> dict[str, str]:
    """TensorRT EP optimization-profile options for the inputs' dynamic dimensions (empty when
    every input is static)."""
    if all(spec.is_static for spec in specs):
        return {}
    rows = {"min": [], "opt": [], "max": []}  # type: dict[str, list[str]]
    for spec in specs:
        ranges = spec.all_ranges
        for which, index in (("min", 0), ("opt", 1), ("max", 2)):
            rows[which].append(f"{spec.name}:" + "x".join(str(r[index]) for r in ranges))
    return {f"trt_profile_{k}_shapes": ",".join(v) for k, v in rows.items()}


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


def _spec(path: Path, node: Any, kind: str) -> TensorSpec:
    dtype = _ORT_TYPES.get(node.type)
    if dtype is None:
        raise ModelLoadError(
            f"{path}: {kind} {node.name!r} has type {node.type}; edgeport runs models whose "
            f"inputs and outputs are tensors of {', '.join(sorted(set(_ORT_TYPES.values())))}"
        )
    shape = tuple(
        d if isinstance(d, str) or (isinstance(d, int) and d >= 0) else None for d in node.shape
    )
    return TensorSpec(name=node.name, dtype=dtype, shape=shape)


def _bfloat16_array(value: Any) -> np.ndarray:
    """A bfloat16 OrtValue as an ``ml_dtypes.bfloat16`` array (ORT's ``numpy()`` has none)."""
    shape = tuple(value.shape())
    count = math.prod(shape)
    if count == 0:
        return np.zeros(shape, numpy_dtype("bfloat16"))
    buffer = (ctypes.c_uint16 * count).from_address(value.data_ptr())
    bits = np.frombuffer(buffer, np.uint16).copy()
    return bits.view(numpy_dtype("bfloat16")).reshape(shape)


def open_request(request: OpenRequest, name: str) -> Backend:
    """A session for ``request`` on ONNX Runtime backend ``name`` with edgeport's settings."""
    profile = None
    if name == "onnxruntime-tensorrt" and request.file.artifact is not None:
        profile = tensorrt_profile_options(request.file.artifact.inputs)
    settings = OrtSettings(
        threads=request.threads,
        device_index=request.device_index,
        cuda_graph=request.cuda_graph and name != "onnxruntime-cpu",
        precision=request.precision,
        tensorrt_profile=profile,
    )
    return OnnxRuntimeBackend(request.model, name, settings)


def _profiler(name: str, file: ModelFile, threads: int | None) -> Profile:
    from edgeport.runtime.tools.profile import profile_onnxruntime  # the tools' profiling code

    profile = None
    if name == "onnxruntime-tensorrt" and file.artifact is not None:
        profile = tensorrt_profile_options(file.artifact.inputs)
    settings = OrtSettings(
        threads=threads, precision=file.precision or "fp32", tensorrt_profile=profile
    )
    return lambda arrays, config: profile_onnxruntime(file.path, name, arrays, config, settings)


def _cpu_bf16_reason(precision: str) -> str | None:
    from edgeport.runtime.backends.registry import cpu_bf16_reason  # the registry imports this

    return cpu_bf16_reason(precision)


def _record(name: str, device: str, precisions: tuple[str, ...], **more: Any) -> BackendSpec:
    return BackendSpec(
        name=name,
        formats=("onnx",),
        target="tensorrt" if name == "onnxruntime-tensorrt" else "onnxruntime",
        device=device,
        precisions=precisions,
        unavailable=lambda file, device_index: unavailable_reason(name, device_index),
        open=functools.partial(open_request, name=name),
        profiler=_profiler,
        packages=("onnxruntime", "onnxruntime-gpu"),
        **more,
    )


# Fastest first. ONNX Runtime's CUDA provider runs fp16 on tensor cores but has few int8 (QDQ)
# kernels, so int8 comes last there. On CPUs int8 is only faster for large models (ResNet-18:
# 17.5 vs 32 ms; the small CNN: 0.18 vs 0.17 ms) and fp16 is emulated, so fp32 comes first.
SPECS = (
    _record(
        "onnxruntime-tensorrt",
        "cuda",
        ("int8", "fp16", "fp32"),
        auto=False,
        manual_reason="not tried automatically: it builds a TensorRT engine when the session "
        "opens; ask for backend='onnxruntime-tensorrt'",
    ),
    _record("onnxruntime-cuda", "cuda", ("fp16", "fp32", "int8")),
    _record(
        "onnxruntime-cpu",
        "cpu",
        ("fp32", "int8", "fp16"),
        precision_unavailable=_cpu_bf16_reason,
    ),
)
