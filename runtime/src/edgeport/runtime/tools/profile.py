"""Where the time goes inside a model: per-layer (per-node) times from the engine's own profiler.

Profiling runs in a session of its own, after the latency rows are measured, because it slows
every call down (about 10 us per node on ONNX Runtime's CPU provider: more than the whole call
of a small model). Its numbers say where the time goes, not how fast the model is.

- ONNX Runtime: a session opened exactly like the runtime's (same provider options, threads and
  graph optimisation level) with ``SessionOptions.enable_profiling``; its chrome-trace file is
  read back. ``Node`` events named ``<node>_kernel_time`` inside the ``model_run`` session
  events of the kept runs are summed per node (the first ``warmup_runs`` runs are dropped).
  Graph optimisation (``ORT_ENABLE_ALL``) fuses and renames nodes (``r1_nchwc``,
  ``ReorderOutput``): names are reported as ONNX Runtime gives them. On the CUDA and TensorRT
  providers a node's time is what the host spent in it (mostly kernel launches), not GPU time.
- TensorRT: an ``IProfiler`` attached to the execution context receives every layer's time after
  each run (:func:`profile_tensorrt`, which needs a GPU).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import ModelBytes
from edgeport.runtime.backends.onnxrt import CPU, PROVIDERS, OnnxRuntimeBackend, OrtSettings
from edgeport.runtime.backends.registry import ModelFile
from edgeport.runtime.bundle import EngineInfo
from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.source import read_model_bytes

log = logging.getLogger(__name__)

ORT_TOOL = "onnxruntime profiler (graph optimisation ORT_ENABLE_ALL: fused nodes as ORT names them)"
TRT_TOOL = "TensorRT IProfiler (layer names as the engine builder named them)"
ORT_OVERHEAD = "profiling adds about 10 us per node per run: shares matter, not the sum"
ORT_GPU_NOTE = "on GPU providers a node's time is host time (mostly kernel launches), not GPU time"


@dataclass(frozen=True)
class ProfileConfig:
    """How many runs to profile after ``warmup_runs`` dropped ones; ``top`` layers to show."""

    warmup_runs: int = 5
    runs: int = 50
    top: int = 15

    def __post_init__(self) -> None:
        if self.warmup_runs < 0 or self.runs < 1 or self.top < 1:
            raise ConfigError(
                f"profiling needs warmup_runs >= 0, runs >= 1 and top >= 1, got "
                f"{self.warmup_runs}, {self.runs} and {self.top}"
            )


@dataclass(frozen=True)
class LayerTime:
    """One node (ONNX Runtime) or layer (TensorRT): its mean time per run and its share of the
    summed layer time."""

    name: str
    op: str
    mean_us: float
    share: float
    calls: int  # per run; more than 1 inside loops
    provider: str | None = None


@dataclass(frozen=True)
class OpTime:
    """The layers of one operator type together."""

    op: str
    layers: int
    mean_us: float
    share: float


@dataclass(frozen=True)
class LayerProfile:
    """Per-layer times of ``runs`` profiled runs, slowest layer first."""

    tool: str
    runs: int
    warmup_runs: int
    layers: tuple[LayerTime, ...]
    run_mean_us: float | None = None  # the whole run as the profiler saw it, when it says
    notes: tuple[str, ...] = ()

    @property
    def layer_total_us(self) -> float:
        return sum(layer.mean_us for layer in self.layers)

    def ops(self) -> list[OpTime]:
        """The layers summed per operator type, slowest first."""
        total = self.layer_total_us
        groups: dict[str, list[LayerTime]] = defaultdict(list)
        for layer in self.layers:
            groups[layer.op].append(layer)
        out = []
        for op, group in groups.items():
            mean = sum(g.mean_us for g in group)
            out.append(OpTime(op, len(group), mean, mean / total if total > 0 else 0.0))
        return sorted(out, key=lambda o: -o.mean_us)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "runs": self.runs,
            "warmup_runs": self.warmup_runs,
            "run_mean_us": self.run_mean_us,
            "layer_total_us": self.layer_total_us,
            "layers": [vars(layer) for layer in self.layers],
            "ops": [vars(op) for op in self.ops()],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerProfile:
        return cls(
            tool=str(data["tool"]),
            runs=int(data["runs"]),
            warmup_runs=int(data["warmup_runs"]),
            layers=tuple(LayerTime(**layer) for layer in data["layers"]),
            run_mean_us=data.get("run_mean_us"),
            notes=tuple(data.get("notes", ())),
        )


def aggregate(
    samples: Mapping[str, Sequence[float]],
    ops: Mapping[str, str],
    runs: int,
    providers: Mapping[str, str | None] | None = None,
) -> tuple[LayerTime, ...]:
    """Per-layer mean time per run (the samples of a layer summed, divided by ``runs``) and
    share of the summed time, slowest first. ``samples``: every recorded time of each layer
    (microseconds), ``ops``: each layer's operator type."""
    if runs < 1:
        raise InputError(f"a profile needs at least one run, got {runs}")
    totals = {name: float(sum(times)) for name, times in samples.items()}
    grand = sum(totals.values())
    layers = [
        LayerTime(
            name=name,
            op=ops.get(name, "unknown"),
            mean_us=total / runs,
            share=total / grand if grand > 0 else 0.0,
            calls=math.ceil(len(samples[name]) / runs),
            provider=(providers or {}).get(name),
        )
        for name, total in totals.items()
    ]
    return tuple(sorted(layers, key=lambda layer: -layer.mean_us))


# --------------------------------------------------------------------------------------------
# ONNX Runtime


def parse_ort_trace(events: Iterable[Mapping[str, Any]], warmup_runs: int) -> LayerProfile:
    """A profile from ONNX Runtime's chrome-trace events, the first ``warmup_runs`` runs
    dropped. Only ``Node`` events ending in ``_kernel_time`` count (``_fence_before`` and
    ``_fence_after`` events of older releases have no duration worth keeping)."""
    events = list(events)
    runs = sorted(
        (e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
        key=lambda e: e["ts"],
    )
    kept = runs[warmup_runs:]
    if not kept:
        raise InputError(
            f"the ONNX Runtime profile has {len(runs)} model_run events, none after the "
            f"{warmup_runs} warm-up runs"
        )
    windows = np.array([(r["ts"], r["ts"] + r["dur"]) for r in kept], dtype=np.float64)
    samples: dict[str, list[float]] = defaultdict(list)
    ops: dict[str, str] = {}
    providers: dict[str, str | None] = {}
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        index = int(np.searchsorted(windows[:, 0], event["ts"], side="right")) - 1
        if index < 0 or event["ts"] > windows[index, 1]:
            continue  # a warm-up run's node
        node = name.removesuffix("_kernel_time")
        args = event.get("args") or {}
        samples[node].append(float(event["dur"]))
        ops[node] = str(args.get("op_name", "unknown"))
        providers[node] = args.get("provider")
    return LayerProfile(
        tool=ORT_TOOL,
        runs=len(kept),
        warmup_runs=warmup_runs,
        layers=aggregate(samples, ops, len(kept), providers),
        run_mean_us=float(np.mean([r["dur"] for r in kept])),
        notes=(ORT_OVERHEAD,),
    )


class _ProfilingOrt(ModuleType):
    """The ``onnxruntime`` module as the backend sees it, except that its ``SessionOptions``
    come with profiling on: so the profiled session is opened by the runtime's own code, with
    exactly the options the timed one had."""

    def __init__(self, ort: ModuleType, prefix: str) -> None:
        super().__init__(ort.__name__)
        self._ort = ort
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ort, name)

    def SessionOptions(self) -> Any:
        options = self._ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = self._prefix
        return options


class ProfilingOrtBackend(OnnxRuntimeBackend):
    """An ONNX Runtime backend whose session records a profile until :meth:`end_profiling`."""

    def __init__(self, model: ModelBytes, backend: str, settings: OrtSettings, prefix: str) -> None:
        self._prefix = prefix
        super().__init__(model, backend, settings)

    def _open_session(
        self, ort: ModuleType, model: ModelBytes, backend: str, settings: OrtSettings
    ) -> Any:
        return super()._open_session(_ProfilingOrt(ort, self._prefix), model, backend, settings)

    def end_profiling(self) -> Path:
        """Stop recording; the path of the chrome-trace JSON file ONNX Runtime wrote."""
        return Path(self._session.end_profiling())


def profile_onnxruntime(
    path: Path,
    backend: str,
    arrays: Sequence[np.ndarray],
    config: ProfileConfig,
    settings: OrtSettings,
) -> LayerProfile:
    """Profile ``config.warmup_runs + config.runs`` runs of ``arrays`` (validated inputs in the
    model's input order) in a fresh profiling session; the trace is read and deleted."""
    model = read_model_bytes(ModelFile("onnx", None, path, path.name), verify=False)
    with tempfile.TemporaryDirectory(prefix="edgeport-profile-") as tmp:
        session = ProfilingOrtBackend(model, backend, settings, str(Path(tmp) / "ort"))
        try:
            for _ in range(config.warmup_runs + config.runs):
                session.infer(arrays)
            trace = session.end_profiling()
        finally:
            session.close()
        try:
            events = json.loads(trace.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read ONNX Runtime's profile {trace}: {exc}") from exc
    if isinstance(events, dict):  # the trace format also allows {"traceEvents": [...]}
        events = events.get("traceEvents", [])
    profile = parse_ort_trace(events, config.warmup_runs)
    if (settings.provider or PROVIDERS.get(backend)) == CPU:
        return profile
    return replace(profile, notes=(*profile.notes, ORT_GPU_NOTE))


# --------------------------------------------------------------------------------------------
# TensorRT


def layer_recorder(trt: ModuleType) -> Any:
    """A ``trt.IProfiler`` that keeps every layer time it is given (milliseconds), by layer."""

    class _LayerTimes(trt.IProfiler):  # type: ignore[name-defined]
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: dict[str, list[float]] = defaultdict(list)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times[layer_name].append(float(ms))

    return _LayerTimes()


def engine_layer_types(trt: ModuleType, engine: Any) -> dict[str, str]:
    """Layer name -> layer type from the engine inspector; empty when the engine was built
    without detailed profiling verbosity (then only names are stored)."""
    try:
        inspector = engine.create_engine_inspector()
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        layers = json.loads(text).get("Layers", [])
    except (AttributeError, TypeError, ValueError) as exc:
        log.debug("no layer types from the engine inspector: %s", exc)
        return {}
    return {
        str(layer["Name"]): str(layer.get("LayerType", "unknown"))
        for layer in layers
        if isinstance(layer, dict) and "Name" in layer
    }


def profile_tensorrt(
    path: Path,
    info: EngineInfo | None,
    arrays: Sequence[np.ndarray],
    config: ProfileConfig,
    device_index: int = 0,
) -> LayerProfile:
    """Per-layer times of a TensorRT engine through an ``IProfiler`` on its execution context.

    UNTESTED WITHOUT A GPU: running an engine needs one, and none was available when this was
    written; ``tests/runtime/test_bench_profile.py::test_tensorrt_layer_profile`` (marked gpu)
    runs it. The engine is opened without CUDA graphs (a profiler sees no layers in a replayed
    graph), run ``warmup_runs`` times, then ``runs`` times with the profiler attached.
    """
    from edgeport.runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(path, info, device_index=device_index, cuda_graph=False)
    try:
        for _ in range(config.warmup_runs):
            backend.infer(arrays)
        trt = backend._trt  # the flavour (tensorrt or tensorrt_rtx) that opened the plan
        recorder = layer_recorder(trt)
        backend._context.profiler = recorder
        for _ in range(config.runs):
            backend.infer(arrays)
        types = engine_layer_types(trt, backend._engine)
    finally:
        backend.close()
    samples = {name: [ms * 1000.0 for ms in times] for name, times in recorder.times.items()}
    return LayerProfile(
        tool=TRT_TOOL,
        runs=config.runs,
        warmup_runs=config.warmup_runs,
        layers=aggregate(samples, types, config.runs),
        notes=() if types else ("layer types need an engine built with detailed verbosity",),
    )
