"""The OpenVINO backend: a bundle's ONNX artifacts (fp32, fp16, Q/DQ int8) and OpenVINO IR
(``.xml`` + ``.bin`` weights) compiled by OpenVINO's CPU plugin.

OpenVINO reads the same ONNX files as ONNX Runtime; on CPUs its int8 kernels are often the
fastest (ResNet-18 int8 16.7 ms against ONNX Runtime's 20.5 ms on a 2-core AVX2 AMD EPYC),
while its per-call overhead makes small models slower. ``edgeport tune`` measures
which wins on a machine.

Settings (``load(..., backend_options={...})``): ``hint`` ``latency`` (default) or
``throughput`` (OpenVINO's PERFORMANCE_HINT), ``streams`` (NUM_STREAMS), ``cache_dir`` (compiled
models are cached there, so a second start skips compilation; default the user's cache,
``$EDGEPORT_CACHE_DIR/openvino`` or ``~/.cache/edgeport/openvino``; ``""`` disables it);
``threads`` comes from ``load``. Infer requests are pooled, one per concurrent caller, so a
``Model`` is safe to share between threads.

The model is compiled from the bytes ``load`` read and verified, never from its path (an IR's
``.xml`` and its weights both). The compiled model is cached by edgeport itself (exported,
stored with its sha256 and checked before it is imported,
:mod:`~edgeport.runtime.backends.compiled_cache`), not by OpenVINO's ``CACHE_DIR``, which would
import a damaged blob as it is. An entry is keyed by the sha256 of the model's bytes (an IR's
graph and weights), the OpenVINO version, the compile properties and the CPU.

Inference precision: a bf16 artifact (the fp32 ONNX file, made for OpenVINO) compiles with
``INFERENCE_PRECISION_HINT`` bf16, on CPUs whose ``OPTIMIZATION_CAPABILITIES`` list BF16
(AVX512_BF16 or AMX); elsewhere it is refused with the reason. Every other artifact compiles
with f32, the graph's own arithmetic (fp16 and int8 files carry theirs): OpenVINO's own default
on bf16 CPUs is bf16, which misses fp32's tolerance (a detector's outputs off by 0.06).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import queue
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend, ModelBytes
from edgeport.runtime.backends.compiled_cache import CompiledCache, warn_once
from edgeport.runtime.backends.spec import BackendSpec, OpenRequest
from edgeport.runtime.errors import BackendUnavailable, ConfigError, InputError, ModelLoadError
from edgeport.runtime.io import cache_dir
from edgeport.runtime.specs import DTYPES, TensorSpec

log = logging.getLogger(__name__)

INSTALL = "pip install 'edgeport-runtime[openvino]'"
HINTS = ("latency", "throughput")
# INFERENCE_PRECISION_HINT per artifact precision; f32 for all others
INFERENCE_PRECISION = {"bf16": "bf16"}
_TYPES = {
    "f32": "float32",
    "f16": "float16",
    "bf16": "bfloat16",
    "f64": "float64",
    "i8": "int8",
    "u8": "uint8",
    "i16": "int16",
    "i32": "int32",
    "i64": "int64",
    "boolean": "bool",
}


@dataclass(frozen=True)
class OpenVinoSettings:
    """How to compile: threads (None: OpenVINO's default), the performance hint, streams and
    the compiled-model cache."""

    threads: int | None = None
    hint: str = "latency"
    streams: int | None = None
    cache_dir: Path | None = None
    precision: str = "fp32"  # the artifact's: bf16 compiles with bf16 inference precision

    @classmethod
    def from_options(
        cls, threads: int | None, options: Mapping[str, Any], precision: str = "fp32"
    ) -> OpenVinoSettings:
        unknown = sorted(set(options) - {"hint", "streams", "cache_dir"})
        if unknown:
            raise ConfigError(
                f"unknown openvino options {unknown}; it takes hint, streams and cache_dir"
            )
        hint = str(options.get("hint", "latency")).lower()
        if hint not in HINTS:
            raise ConfigError(f"openvino hint must be one of {HINTS}, got {hint!r}")
        streams = options.get("streams")
        if streams is not None and (not str(streams).isdigit() or int(streams) < 1):
            raise ConfigError(f"openvino streams must be a positive integer, got {streams!r}")
        cache = options["cache_dir"] if "cache_dir" in options else cache_dir("openvino")
        if cache is None and "cache_dir" not in options:
            warn_once(
                Path("~"),
                "not caching compiled models: this user has no home folder; set "
                "EDGEPORT_CACHE_DIR to a writable folder to cache them",
            )
        return cls(
            threads=threads,
            hint=hint,
            streams=None if streams is None else int(streams),
            cache_dir=Path(cache) if cache not in ("", None) else None,
            precision=precision,
        )

    def config(self) -> dict[str, Any]:
        """The properties passed to ``compile_model``."""
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": self.hint.upper(),
            "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION.get(self.precision, "f32"),
        }
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.streams is not None:
            config["NUM_STREAMS"] = self.streams
        return config


def import_openvino() -> ModuleType:
    if importlib.util.find_spec("openvino") is None:
        raise BackendUnavailable(
            f"the openvino backend needs OpenVINO, which is not installed: {INSTALL}"
        )
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(f"OpenVINO cannot be imported ({exc}): {INSTALL}") from exc
    return openvino


def unavailable_reason() -> str | None:
    """Why OpenVINO cannot run here (not installed), or None; its CPU plugin runs anywhere."""
    if importlib.util.find_spec("openvino") is None:
        return f"OpenVINO is not installed: {INSTALL}"
    return None


@functools.cache
def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of its CPU device (e.g. BF16, FP32, INT8),
    read once per process."""
    ov = import_openvino()
    try:
        found = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except RuntimeError as exc:
        raise BackendUnavailable(f"OpenVINO cannot describe its CPU device: {exc}") from exc
    return tuple(str(c) for c in found)


def bf16_unavailable_reason(capabilities: Sequence[str]) -> str | None:
    """Why OpenVINO cannot run bf16 on a CPU with these ``OPTIMIZATION_CAPABILITIES``, or None
    when it lists BF16."""
    if "BF16" in capabilities:
        return None
    return (
        f"this CPU has no bf16 arithmetic (OpenVINO's CPU capabilities: "
        f"{', '.join(capabilities) or 'none'}); bf16 runs on CPUs with AVX512_BF16 or AMX (Intel "
        "Xeon since Cooper Lake, AMD Zen 4 and later): use the fp32 or int8 artifact here"
    )


def precision_unavailable_reason(precision: str | None) -> str | None:
    """Why OpenVINO cannot run an artifact of ``precision`` on this CPU, or None."""
    if precision != "bf16":
        return None
    try:
        return unavailable_reason() or bf16_unavailable_reason(cpu_capabilities())
    except BackendUnavailable as exc:
        return str(exc)


class OpenVinoBackend(Backend):
    """One compiled model on OpenVINO's CPU plugin, with a pool of infer requests."""

    name = "openvino"

    def __init__(
        self, model: ModelBytes, settings: OpenVinoSettings, file_specs: Sequence[TensorSpec] = ()
    ) -> None:
        ov = import_openvino()
        self.path, self.settings = model.path, settings
        self._version = ov.get_version()
        core = ov.Core()
        config = settings.config()
        # external-data weights are not in the key (they may be gigabytes): no cache for them
        external = model.summary is not None and bool(model.summary.external_data)
        folder = None if external else settings.cache_dir
        cache = CompiledCache(folder) if folder is not None else None
        key = cache_key(model.content_sha256, self._version, config) if cache is not None else ""
        self._compiled: Any = self._import(core, cache, key, config)
        self.cache_state = "off" if cache is None else "verified hit"
        if self._compiled is None:
            self._compiled = _compile(core, model, config)
            if cache is not None:
                stored = cache.put(key, _exported(self._compiled))
                self.cache_state = "miss (stored)" if stored else "unwritable (not cached)"
        self.inference_precision = _inference_precision(self._compiled)
        wanted = INFERENCE_PRECISION.get(settings.precision)
        if wanted is not None and self.inference_precision != wanted:
            self._compiled = None
            raise BackendUnavailable(
                f"OpenVINO compiled {self.path} with {self.inference_precision} inference "
                f"precision, not the {wanted} a {settings.precision} artifact needs: "
                f"{bf16_unavailable_reason(cpu_capabilities()) or 'the CPU plugin declined it'}"
            )
        names = {s.name: s for s in file_specs}
        self.inputs = tuple(_spec(port, names) for port in self._compiled.inputs)
        self.outputs = tuple(_spec(port, names) for port in self._compiled.outputs)
        self._ports = list(self._compiled.outputs)
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        log.debug(
            "opened %s with OpenVINO %s (cache: %s): %s",
            self.path,
            self._version,
            self.cache_state,
            settings,
        )

    def infer(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        compiled = self._compiled
        if compiled is None:
            raise ModelLoadError(f"the openvino model {self.path} was closed")
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            result = request.infer(list(arrays))
            return [np.asarray(result[port]) for port in self._ports]
        except RuntimeError as exc:
            shapes = [a.shape for a in arrays]
            raise InputError(f"openvino failed on inputs of shapes {shapes}: {exc}") from exc
        finally:
            self._requests.put(request)

    def _import(
        self, core: Any, cache: CompiledCache | None, key: str, config: dict[str, Any]
    ) -> Any:
        """The compiled model from a verified cache entry, or None (no cache, no entry, or one
        that did not verify or import)."""
        blob = cache.get(key) if cache is not None else None
        if blob is None:
            return None
        try:
            return core.import_model(blob, "CPU", config)
        except RuntimeError as exc:
            log.warning(
                "OpenVINO cannot import its cached %s (%s); compiling again", self.path, exc
            )
            return None

    def close(self) -> None:
        self._compiled = None
        while not self._requests.empty():
            self._requests.get_nowait()

    def describe(self) -> dict[str, Any]:
        compiled = self._compiled
        info: dict[str, Any] = {
            "library": f"openvino {self._version}",
            "device": "CPU",
            "hint": self.settings.hint,
            "inference_precision": self.inference_precision,
            "cache_dir": str(self.settings.cache_dir) if self.settings.cache_dir else None,
            "compiled_cache": self.cache_state,
            "infer_requests": "one per concurrent caller (pooled)",
        }
        if compiled is not None:
            info["threads"] = compiled.get_property("INFERENCE_NUM_THREADS") or "default"
            info["streams"] = compiled.get_property("NUM_STREAMS")
        return info


def _inference_precision(compiled: Any) -> str:
    """The element type a compiled model computes in (``f32``, ``bf16``, ``f16``)."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return str(getattr(hint, "get_type_name", lambda: hint)())


def cache_key(model_sha256: str, version: str, config: Mapping[str, Any]) -> str:
    """What a compiled model depends on: the model's bytes (``ModelBytes.content_sha256``: an
    IR's weights too), OpenVINO, the compile properties and the CPU it was compiled for (a cache
    folder may be shared between machines)."""
    from edgeport.runtime.envinfo import cpu_model

    text = json.dumps(
        [model_sha256, version, {k: str(v) for k, v in config.items()}, cpu_model()],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _compile(core: Any, model: ModelBytes, config: dict[str, Any]) -> Any:
    """Compile the model's bytes. OpenVINO reads external-data weights only beside a model file
    it opens itself (and refuses links to them), so a model that has them is compiled from its
    path: allowed for a bare file, which nothing verified, refused for an artifact whose bytes
    were checked against a manifest (ONNX Runtime runs it from those bytes)."""
    external = model.summary is not None and model.summary.external_data
    if external and model.known_sha256 is not None:
        raise BackendUnavailable(
            f"openvino cannot compile the verified bytes of {model.path}: its weights are in "
            "external data, which OpenVINO reads only through the model's path; use "
            "onnxruntime-cpu, which runs the verified bytes"
        )
    try:
        if external:
            source = core.read_model(str(model.path))
        else:  # ONNX (bytes), or an IR's .xml (bytes) with its weights in memory
            source = core.read_model(model.data, _weights(model))
        return core.compile_model(source, "CPU", config)
    except RuntimeError as exc:
        raise ModelLoadError(f"OpenVINO cannot compile {model.path}: {exc}") from exc


def _weights(model: ModelBytes) -> bytes:
    """An IR's weights (its one side file) as read with it; empty for ONNX."""
    if len(model.side_files) > 1:
        names = [s.path.name for s in model.side_files]
        raise ModelLoadError(f"{model.path}: an OpenVINO IR has one weights file, got {names}")
    return model.side_files[0].data if model.side_files else b""


def _exported(compiled: Any) -> bytes:
    """A compiled model's serialized form (``export_model`` gives bytes or a BytesIO)."""
    blob = compiled.export_model()
    return blob.getvalue() if hasattr(blob, "getvalue") else bytes(blob)


def _spec(port: Any, file_specs: Mapping[str, TensorSpec]) -> TensorSpec:
    """An OpenVINO port as a TensorSpec, named as in the ONNX file (a port can carry several
    tensor names, e.g. a Cast's output and the graph output it feeds); dynamic dimensions take
    the file's symbolic names."""
    names = sorted(port.get_names())
    name = next((n for n in names if n in file_specs), port.get_any_name())
    type_name = port.get_element_type().get_type_name()
    dtype = _TYPES.get(type_name)
    if dtype is None:
        raise ModelLoadError(f"openvino: {name!r} has element type {type_name}, not supported")
    declared = file_specs.get(name)
    dims: list[int | str | None] = []
    for axis, dim in enumerate(port.get_partial_shape()):
        if dim.is_static:
            dims.append(dim.get_length())
        elif (
            declared is not None
            and axis < declared.rank
            and not isinstance(declared.shape[axis], int)
        ):
            dims.append(declared.shape[axis])
        else:
            dims.append(None)
    return TensorSpec(name, dtype, tuple(dims))


def _open(request: OpenRequest) -> Backend:
    """An ONNX file (its tensors' types as the file declares them) or an IR."""
    settings = OpenVinoSettings.from_options(
        request.threads, request.options, precision=request.precision
    )
    summary = request.model.summary
    if request.file.format != "onnx" or summary is None:
        return OpenVinoBackend(request.model, settings)
    file_specs = [
        TensorSpec(t.name, t.elem_type, t.shape)
        for t in (*summary.inputs, *summary.outputs)
        if t.elem_type in DTYPES
    ]
    return OpenVinoBackend(request.model, settings, file_specs)


# On CPUs fp32 comes first: int8 is faster only for larger models (``edgeport tune`` finds when).
SPECS = (
    BackendSpec(
        name="openvino",
        formats=("onnx", "openvino"),
        target="openvino",
        device="cpu",
        precisions=("fp32", "int8", "fp16", "bf16"),
        unavailable=lambda file, device_index: unavailable_reason(),
        open=_open,
        precision_unavailable=precision_unavailable_reason,
        packages=("openvino",),
        options=True,
    ),
)
