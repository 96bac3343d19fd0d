"""ONNX to a TensorRT plan with the builder API shared by TensorRT 10/11 and TensorRT-RTX.

The network is strongly typed where the library offers it: precision comes from the ONNX file
(fp16 tensors, or Q/DQ nodes for int8), never from builder flags, which TensorRT 11 removed.
One optimization profile gives every input its (min, opt, max) shape; with full TensorRT a
timing cache is loaded from and saved to the bundle so rebuilds are faster (TensorRT-RTX
ignores timing caches since 1.2 and tunes at run time, so none is kept for it); the workspace
is capped. The engine file is the raw serialized plan, loadable by ``trtexec`` and any
TensorRT runtime of the same flavour.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.backends.tensorrt import (
    check_plan,
    sm_to_cc,
    static_unavailable_reason,
)
from edgeport.runtime.backends.tensorrt import import_tensorrt as runtime_import_tensorrt
from edgeport.runtime.bundle import EngineInfo
from edgeport.runtime.errors import ConfigError, ExportError
from edgeport.runtime.io import atomic_write_bytes

log = logging.getLogger(__name__)

DEFAULT_WORKSPACE = 1 << 30  # 1 GiB
TIMING_CACHE_NAME = "timing.cache"
RTX_PORTABLE = "rtx_portable"  # hardware_compatibility of an RTX AOT build for its default GPUs


def import_tensorrt(flavour: str | None = None) -> ModuleType:
    """The TensorRT module: ``flavour`` if given, else full ``tensorrt`` then ``tensorrt_rtx``."""
    return runtime_import_tensorrt(
        flavour,
        install_hint="building engines needs one: pip install 'edgeport-export[tensorrt-rtx]' "
        "(builds on the CPU) or 'edgeport-export[tensorrt]'",
    )


def flavour_of(trt: ModuleType) -> str:
    return "tensorrt_rtx" if trt.__name__.split(".")[0] == "tensorrt_rtx" else "tensorrt"


@dataclass(frozen=True)
class EngineBuild:
    """One built plan: where, what the manifest says about it, how long it took."""

    path: Path
    info: EngineInfo
    build_seconds: float
    size_bytes: int


_NO_GPU_ERRORS = ("cudaError 35", "cudaError 100", "no CUDA-capable device")


def _make_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` routing TensorRT's log to ``logging``; ``.errors`` keeps its errors.

    An RTX ahead-of-time build on a machine without a GPU logs CUDA errors while it succeeds:
    those go to debug. Other errors are warnings; they become part of the error if the step
    fails.
    """
    base: Any = trt.ILogger

    class Logger(base):
        def __init__(self) -> None:
            super().__init__()
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (base.INTERNAL_ERROR, base.ERROR):
                self.errors.append(msg)
                no_gpu = any(marker in msg for marker in _NO_GPU_ERRORS)
                log.log(logging.DEBUG if no_gpu else logging.WARNING, "TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Logger()


def _progress_monitor(trt: ModuleType, label: str) -> Any | None:
    """An ``IProgressMonitor``: one tqdm bar for the top-level phase, sub-phases as its postfix.

    None where the library has no progress monitor (then only the log shows progress).
    """
    base: Any = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None
    from tqdm.auto import tqdm

    class Monitor(base):
        def __init__(self) -> None:
            super().__init__()
            self.bar: Any = None
            self.top: str | None = None

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if self.bar is None:
                self.top = phase_name
                self.bar = tqdm(total=num_steps, desc=label, unit="step", leave=False)
            else:
                self.bar.set_postfix_str(phase_name, refresh=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            if self.bar is not None and phase_name == self.top:
                self.bar.update(step + 1 - self.bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            if self.bar is not None and phase_name == self.top:
                self.bar.close()
                self.bar, self.top = None, None

    return Monitor()


def _compute_capability(trt: ModuleType, config: Any) -> str | None:
    """ "8.6"-style target; None for a build portable across the library's default GPUs."""
    if flavour_of(trt) == "tensorrt_rtx":
        count = int(getattr(config, "num_compute_capabilities", 0) or 0)
        targets = [config.get_compute_capability(i) for i in range(count)]
        found = [sm_to_cc(str(t).rsplit(".", 1)[-1]) for t in targets]
        ccs = [cc for cc in found if cc]
        if not ccs:
            return None  # RTX AOT default: portable to Ampere and later RTX GPUs
        return ",".join(ccs)
    level = str(getattr(config, "hardware_compatibility_level", "NONE")).rsplit(".", 1)[-1]
    if level != "NONE":
        return None
    return _cuda_capability()


def _cuda_capability() -> str | None:
    """The build GPU's compute capability, which a full TensorRT plan is tied to."""
    devices = probe_gpus().devices
    return devices[0].compute_capability if devices else None


def _parse(trt: ModuleType, builder: Any, onnx_path: Path, logger: Any) -> tuple[Any, Any]:
    flags = 0
    strongly = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly is not None:
        flags |= 1 << int(strongly)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None and strongly is None:  # TensorRT 8.x needed it; 10+ is implicit
        flags |= 1 << int(explicit)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(
            f"the TensorRT ONNX parser rejected {onnx_path.name}: "
            + ("; ".join(errors) or "; ".join(logger.errors) or "no details given")
        )
    if network.num_layers == 0:
        raise ExportError(
            f"the TensorRT ONNX parser found no layers in {onnx_path.name}: is it an ONNX model?"
        )
    return network, parser


Profile = Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def _add_profile(builder: Any, config: Any, network: Any, profiles: Profile, name: str) -> None:
    """One optimization profile: each network input's (min, opt, max) shapes from
    ``profiles``; every input must have one, of the input's rank, agreeing on fixed axes."""
    inputs = {
        network.get_input(i).name: tuple(network.get_input(i).shape)
        for i in range(network.num_inputs)
    }
    if sorted(inputs) != sorted(profiles):
        raise ExportError(
            f"{name} has inputs {sorted(inputs)}, the engine profile gives shapes for "
            f"{sorted(profiles)}"
        )
    profile = builder.create_optimization_profile()
    for input_name, dims in inputs.items():
        shapes = profiles[input_name]
        for shape in shapes:
            fixed_ok = all(d < 0 or d == s for d, s in zip(dims, shape, strict=False))
            if len(shape) != len(dims) or not fixed_ok:
                raise ExportError(
                    f"{name}: profile shape {list(shape)} does not fit input {input_name!r} "
                    f"{list(dims)} (-1 = dynamic)"
                )
        profile.set_shape(input_name, *shapes)
    config.add_optimization_profile(profile)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    profiles: Profile,
    timing_cache: str | Path | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE,
    flavour: str | None = None,
    label: str | None = None,
) -> EngineBuild:
    """Build a plan from ``onnx_path`` with one optimization profile (``profiles``: input name
    -> (min, opt, max) shapes) and write it to ``engine_path``.

    ``timing_cache`` is read if it exists and written back (merged) after the build; with
    TensorRT-RTX, whose builder ignores timing caches, it is left alone and not recorded.
    """
    trt = import_tensorrt(flavour)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    label = label or engine_path.name
    if workspace_bytes < 1 << 20:
        raise ConfigError(f"workspace must be at least 1 MiB, got {workspace_bytes} bytes")
    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, onnx_path, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    _add_profile(builder, config, network, profiles, onnx_path.name)
    monitor = _progress_monitor(trt, label)
    if monitor is not None:
        config.progress_monitor = monitor

    cache_path = Path(timing_cache) if timing_cache else None
    if flavour_of(trt) == "tensorrt_rtx":
        cache_path = None  # a no-op there (deprecated in TensorRT-RTX 1.2)
    if cache_path is not None:
        _attach_timing_cache(config, cache_path)

    log.info("building %s engine %s (profile %s)", flavour_of(trt), label, dict(profiles))
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if plan is None:
        raise ExportError(
            f"TensorRT could not build an engine from {onnx_path.name}: "
            + ("; ".join(logger.errors) or "the builder gave no reason (run with -v)")
        )
    data = bytes(plan)
    atomic_write_bytes(engine_path, data)
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    info = EngineInfo(
        flavour=flavour_of(trt),
        version=str(trt.__version__),
        compute_capability=_compute_capability(trt, config),
        hardware_compatibility=_hardware_compatibility(trt, config),
        timing_cache=cache_path.name if cache_path else None,
        workspace_bytes=int(workspace_bytes),
    )
    log.info("built %s: %.1f MB in %.1f s", engine_path.name, len(data) / 1e6, seconds)
    return EngineBuild(engine_path, info, seconds, len(data))


def _attach_timing_cache(config: Any, path: Path) -> None:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s was made on another GPU or TensorRT; starting anew", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=True)


def _hardware_compatibility(trt: ModuleType, config: Any) -> str:
    if flavour_of(trt) == "tensorrt_rtx":
        return RTX_PORTABLE if _compute_capability(trt, config) is None else "none"
    return str(config.hardware_compatibility_level).rsplit(".", 1)[-1].lower()


def engine_runnable_here(engine_path: str | Path, info: EngineInfo) -> str | None:
    """None when this machine can run the plan, else why not (no GPU, wrong GPU, ...).

    The runtime's own checks decide, so the gate runs an engine exactly where ``load`` would.
    """
    reason = static_unavailable_reason(info)
    if reason is not None:
        return reason
    validity = check_plan(Path(engine_path), info.flavour)
    if validity.state == "invalid":
        return f"{info.flavour} says the engine cannot run on this GPU: {validity}"
    return None
