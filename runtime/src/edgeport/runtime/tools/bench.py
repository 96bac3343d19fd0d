"""Latency benchmarks of any model: every backend, precision and input shape timed side by side.

``benchmark(source, settings)`` times a bundle directory, a bare ``.onnx`` file or a TensorRT
``.engine``/``.plan`` file (as ``trtexec --onnx=``, OpenVINO's ``benchmark_app -m`` and
``onnxruntime_perf_test`` do) on every backend and precision this machine can run, and the
PyTorch baselines where a bundle can rebuild its model in PyTorch.

- Inputs (:class:`InputData`): seeded synthetic data of the model's dtypes (value ranges for
  ids and masks), the bundle's stored reference inputs, an ``.npz`` file, or raw images
  preprocessed as the model card says. Real inputs are tiled or cut along axis 0 to each row's
  batch; their other dimensions must match the row's shapes.
- Workloads (:class:`Workload`): shape sets (``--shapes``, one row each, as OpenVINO's
  ``-data_shape``) and batch sizes (``--batch``: axis 0 of the first input and of every input
  whose axis 0 is dynamic). A row's ``batch`` is axis 0 of the first input; throughput is
  samples per second.
- Timing: :mod:`timing` (warm-up, repeats, percentiles; CUDA events between the host-to-device,
  compute and device-to-host stages of a candidate that exposes them).
- Parity: each candidate's outputs on the bundle's stored reference inputs against the stored
  reference outputs, judged per output by :func:`edgeport.runtime.compare.judge` (a classifier's
  logits also by top-1 agreement). A bare file has no reference: its parity is empty.
- Profile: per-layer times from a separate profiling session (:mod:`profile`), reported apart
  from the latency rows.

Scenarios: ``single-stream`` measures batch 1 and its headline is the p90 latency (as MLPerf
single-stream); ``offline`` measures every workload and its headline is the peak throughput;
``both`` (the default) reports both. Every row carries its speed-up against PyTorch eager fp32
on the same device and input shapes (ratio of medians) when that baseline ran.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.backends.registry import (
    BackendNames,
    BackendSpec,
    ModelFile,
    backend_spec,
    formats_text,
    runs_format,
    short_reason,
    target_mismatch,
)
from edgeport.runtime.bundle import PRECISIONS, Manifest
from edgeport.runtime.chunks import run_in_chunks
from edgeport.runtime.compare import Comparison, OutputCheck, judge, output_kind
from edgeport.runtime.errors import ConfigError, EdgeportError, InputError
from edgeport.runtime.feeds import Feeds, InputData, Shapes, conform
from edgeport.runtime.plugins import COMPILE, EAGER, available_baselines
from edgeport.runtime.reference import StoredReference, load_reference
from edgeport.runtime.source import ModelSource, resolve_source, with_bf16
from edgeport.runtime.specs import TensorSpec
from edgeport.runtime.tools.bench_inputs import INPUT_KINDS, Workload, input_data
from edgeport.runtime.tools.bench_result import (
    CUDA_GRAPH,
    BenchResult,
    BenchRow,
    ProfiledRow,
    Skipped,
    auto_label,
    candidate_label,
    shapes_text,
    speedups,
)
from edgeport.runtime.tools.model_record import model_record
from edgeport.runtime.tools.profile import (
    LayerProfile,
    ProfileConfig,
)
from edgeport.runtime.tools.timing import (
    DeviceStages,
    LatencyStats,
    TimingConfig,
    throughput,
    time_device,
    time_host,
)

log = logging.getLogger(__name__)

SCENARIOS = ("single-stream", "offline", "both")


def _bench_order(specs: tuple[BackendSpec, ...]) -> list[BackendSpec]:
    """The CPU backends in auto's order, then the GPU ones, the engine builders last."""
    cpu = [s for s in specs if s.device == "cpu"]
    return cpu + [s for s in reversed(specs) if s.device != "cpu"]


RUNTIME_BACKENDS = BackendNames(order=_bench_order)  # every registered backend
AUTO = "auto"  # the model as load(backend="auto", expected_batch=batch) opens it
SELECTABLE_BACKENDS = BackendNames(with_auto=True, order=_bench_order)
BASELINES = (EAGER, COMPILE, CUDA_GRAPH)
DEFAULT_IMAGE_BATCHES = (1, 8, 32)
SPEEDUP_TEXT = "PyTorch eager fp32 p50 / row p50, same device and input shapes"


# --------------------------------------------------------------------------------------------
# Settings


def parse_batches(text: str | Iterable[int]) -> tuple[int, ...]:
    """``"1,8,32"`` (or an iterable of ints) -> (1, 8, 32), sorted, unique, each >= 1."""
    if isinstance(text, str):
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise ConfigError(f"batch sizes must be integers like 1,8,32, got {text!r}") from exc
    else:
        values = [int(v) for v in text]
    if not values or min(values) < 1:
        raise ConfigError(f"batch sizes must be integers >= 1, got {text!r}")
    return tuple(sorted(set(values)))


def parse_list(
    text: str | Sequence[str] | None, allowed: Sequence[str], what: str
) -> tuple[str, ...] | None:
    """Comma-separated names checked against ``allowed``; None/"" -> None (= all)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    items = [t for t in items if t]
    if not items:
        return None
    unknown = [t for t in items if t not in allowed]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; choose from {list(allowed)}")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class BenchSettings:
    """What to benchmark and how. Empty ``backends``/``precisions`` = every one the model has
    and this machine can run, and ``auto`` (the model as ``load(backend="auto")`` opens it,
    per batch size). ``batches`` and ``shapes`` (shape sets, one row each) combine:
    each shape set at each batch size; neither = batch 1, 8, 32 for an image model with a card,
    else the model's own shapes (dynamic dimensions at their opt value, 1 when unbounded).
    ``inputs``: "auto" (the bundle's reference inputs when it stores them and no shape sets or
    value ranges are given, else synthetic), "synthetic", "reference" or the path of an
    ``.npz`` file; ``images`` (files or folders)
    instead, for image models with a card. ``torch.compile`` runs only at
    ``compile_precisions`` (each shape is a compilation)."""

    backends: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    batches: tuple[int, ...] = ()
    shapes: tuple[Mapping[str, tuple[int, ...]], ...] = ()
    scenario: str = "both"
    timing: TimingConfig = field(default_factory=TimingConfig)
    threads: int | None = None
    baselines: tuple[str, ...] = (EAGER,)
    compile_precisions: tuple[str, ...] = ("fp32",)
    cuda_graph: bool = False
    parity: bool = True
    inputs: str = "auto"
    images: tuple[str, ...] = ()
    value_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    seed: int = 0
    profile: ProfileConfig | None = None

    def __post_init__(self) -> None:
        if self.batches:
            object.__setattr__(self, "batches", parse_batches(self.batches))
        for name in ("backends", "precisions", "baselines", "compile_precisions", "images"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "shapes", tuple(dict(s) for s in self.shapes))
        problems = [
            f"unknown {what} {bad}; choose from {list(allowed)}"
            for what, values, allowed in (
                ("backends", self.backends, SELECTABLE_BACKENDS),
                ("precisions", self.precisions, PRECISIONS),
                ("baselines", self.baselines, BASELINES),
                ("compile precisions", self.compile_precisions, ("fp32", "fp16")),
                ("scenario", (self.scenario,), SCENARIOS),
            )
            if (bad := [v for v in values if v not in allowed])
        ]
        problems += self._input_problems()
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if problems:
            raise ConfigError("invalid benchmark settings: " + "; ".join(problems))

    def _input_problems(self) -> list[str]:
        out = []
        if self.inputs not in INPUT_KINDS and not self.inputs.lower().endswith(".npz"):
            out.append(f"inputs must be one of {list(INPUT_KINDS)} or an .npz file: {self.inputs}")
        if self.images and self.inputs != "auto":
            out.append(f"give either images or inputs={self.inputs!r}, not both")
        if self.value_ranges and (self.images or self.inputs not in ("auto", "synthetic")):
            out.append("value ranges shape synthetic inputs; these inputs are real data")
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the ``config`` of a result); timing settings are flattened in."""
        data = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("timing", "shapes", "value_ranges", "profile")
        }
        data["shapes"] = [{k: list(v) for k, v in s.items()} for s in self.shapes]
        data["value_ranges"] = {k: list(v) for k, v in self.value_ranges.items()}
        data["profile"] = asdict(self.profile) if self.profile else None
        data.update(asdict(self.timing))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def _workloads(model: ModelSource, settings: BenchSettings) -> list[Workload]:
    batches = settings.batches
    if settings.scenario == "single-stream":
        batches = (1,)
    elif not batches and not settings.shapes and model.card and model.card.is_image_model:
        batches = DEFAULT_IMAGE_BATCHES
    shape_sets = settings.shapes or ({},)
    return [Workload(dict(s), b) for s in shape_sets for b in (batches or (None,))]


# --------------------------------------------------------------------------------------------
# What is timed


@dataclass
class Timed:
    """One thing to time: a runtime model or a PyTorch baseline, with how to run it.

    ``run`` takes inputs by name and returns outputs by name (``Model.infer``); a candidate on
    a GPU may also offer ``device_stages`` (H2D, compute, D2H on one stream) and ``profile``
    (per-layer times of validated inputs in input order, in a session of its own).
    """

    backend: str  # runtime backend name, or baseline name ("torch", "torch-compile", ...)
    kind: str  # "edgeport" or "baseline"
    precision: str
    device: str  # "cpu" or "cuda"
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    run: Callable[[Feeds], Mapping[str, np.ndarray]]
    close: Callable[[], None]
    artifact: str | None = None
    cuda_graph: bool = False
    device_stages: Callable[[Feeds], DeviceStages] | None = None
    max_batch: int | None = None
    min_batch: int = 1
    profile: Callable[[list[np.ndarray], ProfileConfig], LayerProfile] | None = None
    chosen: str | None = None  # the auto row: the backend auto chose
    choice_basis: str | None = None  # the auto row: what decided (Model.choice_basis)

    @property
    def label(self) -> str:
        if self.chosen is not None:
            return auto_label(self.chosen, self.precision)
        return f"{candidate_label(self.backend, self.cuda_graph, self.precision)} ({self.device})"


def by_name(
    fn: Callable[[np.ndarray], Any], input_name: str, output_name: str | None = None
) -> Any:
    """A one-array runner (``fn(batch)``) as a function of inputs by name; with
    ``output_name``, its result named too (for PyTorch baselines and hand-made runners)."""
    if output_name is None:
        return lambda feeds: fn(feeds[input_name])
    return lambda feeds: {output_name: fn(feeds[input_name])}


@dataclass
class Plan:
    """Something to measure, opened only when its turn comes and closed right after.

    ``open()`` returns a :class:`Timed`; a plan with ``fixed_shapes`` (a captured CUDA graph)
    is opened once per workload, others once for all of them; a plan with ``batch`` (auto,
    which chooses per batch size) measures only the workloads of that batch size.
    """

    backend: str
    precision: str
    device: str
    open: Callable[[], Timed]
    artifact: str | None = None
    fixed_shapes: bool = False
    batch: int | None = None


def measure(
    candidate: Timed, feeds: Feeds, config: TimingConfig
) -> tuple[LatencyStats, dict[str, LatencyStats] | None, str]:
    """Time ``candidate`` on one set of inputs: device stages when it offers them, else the
    host clock."""
    if candidate.device_stages is not None:
        work = candidate.device_stages(feeds)
        try:
            samples = time_device(work, config)
        finally:
            work.close()
        stages = {k: LatencyStats.from_samples(v) for k, v in samples.items() if k != "total"}
        return LatencyStats.from_samples(samples["total"]), stages, work.timer
    samples_ms = time_host(lambda: candidate.run(feeds), config)
    return LatencyStats.from_samples(samples_ms), None, "perf_counter_ns"


# --------------------------------------------------------------------------------------------
# Parity against the stored reference


def _parity_summary(checks: Sequence[OutputCheck], count: int) -> dict[str, Any]:
    top1 = next(
        (c.comparison.top1_agreement for c in checks if isinstance(c.comparison, Comparison)),
        None,
    )
    errors = [c.comparison.max_abs for c in checks]
    return {
        "count": count,
        "top1_agreement": top1,
        "max_abs": max(errors) if errors and all(math.isfinite(e) for e in errors) else None,
        "nonfinite": sum(c.comparison.nonfinite for c in checks),
        "passed": all(not c.failures for c in checks),
        "failures": [f"{c.name}: {f}" for c in checks for f in c.failures],
        "outputs": {
            c.name: {
                "kind": c.kind,
                "max_abs": c.comparison.to_dict()["max_abs"],
                "cosine_min": c.comparison.to_dict()["cosine_min"],
                "tolerance": c.tolerance.description,
            }
            for c in checks
        },
    }


def quick_parity(
    candidate: Timed,
    reference: StoredReference,
    chunk: int,
    *,
    fixed: Mapping[str, tuple[int, ...]] | None = None,
    classifier: bool = False,
) -> dict[str, Any] | None:
    """The candidate's outputs on the stored reference inputs, judged per output against the
    stored reference outputs with the tolerance of its precision.

    Runs whole chunks of ``chunk`` samples only (the largest benchmarked batch, at most the
    candidate's max; the samples beyond the last whole chunk are left out), so that no extra
    input shape is compiled or captured for parity. A ``fixed``-shape candidate (a CUDA graph)
    gets no parity unless the reference has its shapes and at least ``chunk`` samples. None
    when no parity can be had this way.
    """
    count = reference.count
    chunk = max(1, min(chunk, candidate.max_batch or chunk))
    if fixed is not None:
        stored = {k: v.shape[1:] for k, v in reference.inputs.items()}
        if any(stored.get(k) != tuple(v[1:]) for k, v in fixed.items()):
            return None
    if count >= chunk:
        count = count // chunk * chunk
    elif fixed is not None or count < candidate.min_batch:
        return None
    feeds = {
        s.name: conform(reference.inputs[s.name][:count], s, "the reference")
        for s in candidate.inputs
    }
    got = run_in_chunks(candidate.run, feeds, chunk)
    missing = [name for name in got if name not in reference.outputs]
    if missing:
        raise InputError(
            f"the reference stores no outputs {missing} (it has {list(reference.outputs)})"
        )
    kinds = {
        s.name: output_kind(s, classifier=classifier, index=i)
        for i, s in enumerate(candidate.outputs)
    }
    checks = judge(
        {name: reference.outputs[name][:count] for name in got},
        got,
        precision=candidate.precision if candidate.precision in PRECISIONS else "fp32",
        kinds=kinds,
        labels=None if reference.labels is None else reference.labels[:count],
    )
    return _parity_summary(checks, count)


# --------------------------------------------------------------------------------------------
# Building the candidates


def _device_of(backend: str) -> str:
    return backend_spec(backend).device


def _bundle_dir(model: ModelSource) -> Path:
    return model.path if model.kind == "bundle" else model.path.parent


def _profiler(
    backend: str, cand: ModelFile, threads: int | None
) -> Callable[[list[np.ndarray], ProfileConfig], LayerProfile] | None:
    """The backend's per-layer profiler (``BackendSpec.profiler``); None when it has none."""
    factory = backend_spec(backend).profiler
    return None if factory is None else factory(backend, cand, threads)


def _open_runtime(
    model: ModelSource,
    backend: str,
    cand: ModelFile,
    graph: bool,
    threads: int | None,
    verified: set[str],
) -> Timed:
    from edgeport.runtime.loader import load  # opens backends: imported when a plan opens

    opened = load(
        model.path,
        backend=backend,
        precision=cand.precision,  # tells a bare fp32 file from the same file run in bf16
        threads=threads,
        cuda_graph=graph,
        verify=cand.label not in verified,
        artifact=cand.label,
        allow_failed=True,  # timed and reported with its parity, never chosen by auto
    )
    verified.add(cand.label)  # hashed once: later opens of the same file skip the sha256
    return Timed(
        backend=backend,
        kind="edgeport",
        precision=cand.precision or opened.precision,
        device=_device_of(backend),
        inputs=opened.inputs,
        outputs=opened.outputs,
        run=opened.infer,
        close=opened.close,
        artifact=cand.label,
        cuda_graph=graph,
        max_batch=opened.batch_range.max,
        min_batch=opened.batch_range.min,
        profile=_profiler(backend, cand, threads),
    )


def _no_file_reason(model: ModelSource, backend: str) -> str:
    fmt = formats_text(backend)
    if model.kind == "bundle":
        hint = " (export with --format including it)" if fmt != "onnx" else ""
        return f"the bundle has no {fmt} artifact{hint}"
    return f"{model.path.name} is not a file {backend} runs ({fmt})"


def _precisions(model: ModelSource, settings: BenchSettings) -> tuple[str | None, ...]:
    have = tuple(dict.fromkeys(c.precision for c in model.candidates))
    if not settings.precisions:
        return have
    missing = [p for p in settings.precisions if p not in have]
    if missing:
        names = sorted(p or "unknown" for p in have)
        raise ConfigError(f"{model.path} has no artifacts of precision {missing}; it has {names}")
    return settings.precisions


def _runtime_plans(model: ModelSource, settings: BenchSettings) -> tuple[list[Plan], list[Skipped]]:
    plans: list[Plan] = []
    skipped: list[Skipped] = []
    verified: set[str] = set()
    for backend in [b for b in settings.backends or RUNTIME_BACKENDS if b != AUTO]:
        device = _device_of(backend)
        files = [  # what it opens, made for any engine or for its own (int8 per engine)
            c
            for c in model.candidates
            if runs_format(backend, c.format) and target_mismatch(backend, c) is None
        ]
        if not files and settings.backends:
            skipped.append(Skipped(backend, None, device, _no_file_reason(model, backend)))
        graphs = (False, True) if settings.cuda_graph and device == "cuda" else (False,)
        for precision in _precisions(model, settings):
            first: dict[str, ModelFile] = {}  # one file per format (OpenVINO: ONNX and IR)
            for c in files:
                if c.precision == precision:
                    first.setdefault(c.format, c)
            for cand in first.values():
                plans += [
                    Plan(
                        backend,
                        precision or "unknown",
                        device,
                        partial(_open_runtime, model, backend, cand, g, settings.threads, verified),
                        cand.label,
                        fixed_shapes=g,
                    )
                    for g in graphs
                ]
    return plans, skipped


def baseline_unavailable(model: ModelSource) -> str | None:
    """Why no PyTorch baseline can rebuild this model, or None when it may."""
    if model.manifest is None:
        what = {"onnx": "ONNX file", "engine": "TensorRT engine"}.get(model.kind, model.kind)
        return (
            f"bare {what}: there is no PyTorch model to rebuild (the baselines rebuild "
            "edgeport-trained models from a bundle's reference weights)"
        )
    if not (model.manifest.reference or {}).get("weights"):
        return "the bundle has no PyTorch weights (reference/weights.safetensors)"
    if len(model.manifest.artifacts[0].inputs) != 1:
        return "the PyTorch baselines run models of one image input"
    return None


def _baseline_specs(manifest: Manifest) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """What a baseline takes and gives: the fp32 artifact's image input and first output, as
    float32 (a baseline converts to its own precision inside)."""
    art = next((a for a in manifest.artifacts if a.precision == "fp32"), manifest.artifacts[0])
    return (replace(art.inputs[0], dtype="float32"),), (replace(art.outputs[0], dtype="float32"),)


def _open_baseline(
    cls: Any,
    name: str,
    device: str,
    precision: str,
    bundle_dir: Path,
    manifest: Manifest,
    threads: int | None,
) -> Timed:
    kwargs: dict[str, Any] = {"device": device, "precision": precision}
    if threads is not None:
        kwargs["threads"] = threads
    if name == CUDA_GRAPH:
        kwargs["cuda_graph"] = True
    base = cls(bundle_dir, manifest, **kwargs)
    inputs, outputs = _baseline_specs(manifest)
    stages = getattr(base, "device_stages", None)
    return Timed(
        backend=name,
        kind="baseline",
        precision=precision,
        device=device,
        inputs=inputs,
        outputs=outputs,
        run=by_name(base.run, inputs[0].name, outputs[0].name),
        close=base.close,
        cuda_graph=name == CUDA_GRAPH,
        device_stages=by_name(stages, inputs[0].name)
        if callable(stages) and device == "cuda"
        else None,
    )


def _baseline_targets(
    name: str, devices: Sequence[str], settings: BenchSettings
) -> list[tuple[str, str]]:
    """(device, precision) pairs a baseline runs at: fp32, and fp16 on CUDA; CUDA graphs on
    CUDA only; torch.compile only at the compile precisions."""
    out = []
    for device in devices:
        if name == CUDA_GRAPH and device != "cuda":
            continue
        for precision in ("fp32", "fp16") if device == "cuda" else ("fp32",):
            if name != COMPILE or precision in settings.compile_precisions:
                out.append((device, precision))
    return out


def _baseline_plans(
    model: ModelSource, settings: BenchSettings, devices: Sequence[str]
) -> tuple[list[Plan], list[Skipped]]:
    if not settings.baselines:
        return [], []
    reason = baseline_unavailable(model)
    if reason or model.manifest is None:
        return [], [Skipped(name, None, None, str(reason)) for name in settings.baselines]
    manifest, bundle_dir, threads = model.manifest, _bundle_dir(model), settings.threads
    classes = available_baselines()
    plans: list[Plan] = []
    skipped: list[Skipped] = []
    for name in settings.baselines:
        cls = classes.get(COMPILE if name == COMPILE else EAGER)
        why = (
            "baseline is not installed: pip install edgeport-train (it brings torch)"
            if cls is None
            else cls.unavailable_reason()
        )
        if why:
            skipped.append(Skipped(name, None, None, why))
            continue
        for device, precision in _baseline_targets(name, devices, settings):
            opener = partial(
                _open_baseline, cls, name, device, precision, bundle_dir, manifest, threads
            )
            plans.append(Plan(name, precision, device, opener))
    return plans, skipped


def _open_auto(model: ModelSource, batch: int, threads: int | None) -> Timed:
    """The model as ``load(backend="auto", expected_batch=batch)`` opens it: a tuning record's
    winner when one holds here, else the fixed rule; labelled with what it chose."""
    from edgeport.runtime.loader import load

    opened = load(model.path, threads=threads, expected_batch=batch)
    return Timed(
        backend=AUTO,
        kind="edgeport",
        precision=opened.precision,
        device=_device_of(opened.backend),
        inputs=opened.inputs,
        outputs=opened.outputs,
        run=opened.infer,
        close=opened.close,
        artifact=opened.artifact.name if opened.artifact else opened.path.name,
        max_batch=opened.batch_range.max,
        min_batch=opened.batch_range.min,
        chosen=opened.backend,
        choice_basis=opened.choice_basis,
    )


def _auto_plans(
    model: ModelSource, settings: BenchSettings, workloads: Sequence[Workload]
) -> list[Plan]:
    """One auto plan per batch size (auto may choose differently for each)."""
    if settings.backends and AUTO not in settings.backends:
        return []
    batches = dict.fromkeys(w.batch or 1 for w in workloads)
    return [
        Plan(AUTO, AUTO, "cpu", partial(_open_auto, model, b, settings.threads), batch=b)
        for b in batches
    ]


def _plans(
    model: ModelSource, settings: BenchSettings, workloads: Sequence[Workload]
) -> tuple[list[Plan], list[Skipped]]:
    """Baselines first (on every device the runtime plans use), then the runtime's backends,
    then auto's choice."""
    plans, skipped = _runtime_plans(model, settings)
    devices = sorted({p.device for p in plans if p.device == "cpu" or probe_gpus().reason is None})
    base_plans, base_skipped = _baseline_plans(model, settings, devices)
    return base_plans + plans + _auto_plans(model, settings, workloads), skipped + base_skipped


# --------------------------------------------------------------------------------------------
# Measuring


@dataclass
class _BenchRun:
    """The state of one benchmark run: what it measured so far."""

    settings: BenchSettings
    data: InputData
    reference: StoredReference | None  # None: no parity
    classifier: bool
    say: Callable[[str], None]
    rows: list[BenchRow] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)
    profiles: list[ProfiledRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    specs: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] | None = None

    def plan(self, plan: Plan, workloads: Sequence[Workload]) -> None:
        """Open the plan (once, or once per workload), check parity once, time each workload."""
        if plan.batch is not None:
            workloads = [w for w in workloads if (w.batch or 1) == plan.batch]
        groups = [[w] for w in workloads] if plan.fixed_shapes else [list(workloads)]
        for group in groups:
            cand = self._open(plan, group)
            if cand is None:
                continue
            try:
                shaped = [w.resolve(cand.inputs, self.data.shapes) for w in group]
                parity = self._parity(cand, shaped, plan.fixed_shapes)
                for shapes in shaped:
                    self._row(cand, shapes, parity)
            finally:
                cand.close()

    def _open(self, plan: Plan, group: Sequence[Workload]) -> Timed | None:
        try:
            cand = plan.open()
        except EdgeportError as exc:
            reason = short_reason(str(exc))
            for w in group if plan.fixed_shapes else (None,):
                self.skipped.append(
                    Skipped(
                        plan.backend,
                        plan.precision,
                        plan.device,
                        reason,
                        plan.artifact,
                        w.batch if w else None,
                        dict(w.shapes) if w and w.shapes else None,
                    )
                )
            # listed in the result; logged quietly since "all backends" includes absent ones
            log.debug("skip %s %s (%s): %s", plan.backend, plan.precision, plan.device, reason)
            return None
        if self.specs is None and cand.kind == "edgeport":
            self.specs = (cand.inputs, cand.outputs)
        return cand

    def _parity(self, cand: Timed, shaped: Sequence[Shapes], fixed: bool) -> dict[str, Any]:
        if self.reference is None:
            return {}
        batches = [s[cand.inputs[0].name][0] for s in shaped if cand.inputs and cand.inputs[0].rank]
        try:
            found = quick_parity(
                cand,
                self.reference,
                max(batches, default=1),
                fixed=shaped[0] if fixed else None,
                classifier=self.classifier,
            )
        except EdgeportError as exc:
            found = {"error": str(exc)}
            log.warning("parity of %s could not be checked: %s", cand.label, exc)
        if found is not None:
            self.parity[cand.label] = found
        return found or {}

    def _row(self, cand: Timed, shapes: Shapes, parity: Mapping[str, Any]) -> None:
        feeds = self.data.feeds(cand.inputs, shapes)
        first = cand.inputs[0] if cand.inputs else None
        batch = shapes[first.name][0] if first is not None and first.rank else 1
        self.say(f"bench {cand.label} {shapes_text(shapes)}")
        try:
            stats, stages, timer = measure(cand, feeds, self.settings.timing)
        except EdgeportError as exc:
            self.skipped.append(
                Skipped(
                    cand.backend,
                    cand.precision,
                    cand.device,
                    str(exc),
                    cand.artifact,
                    batch,
                    shapes,
                )
            )
            (log.info if isinstance(exc, InputError) else log.warning)(
                "%s %s not measured: %s", cand.label, shapes_text(shapes), exc
            )
            return
        row = BenchRow(
            backend=cand.backend,
            kind=cand.kind,
            precision=cand.precision,
            device=cand.device,
            batch=batch,
            latency=stats,
            throughput=throughput(batch, stats),
            timer=timer,
            shapes=shapes,
            artifact=cand.artifact,
            cuda_graph=cand.cuda_graph,
            stages=stages,
            parity_top1=parity.get("top1_agreement"),
            parity_max_abs=parity.get("max_abs"),
            parity_passed=parity.get("passed"),
            warnings=self._variation(cand, shapes, stats),
            chosen_backend=cand.chosen,
            choice_basis=cand.choice_basis,
        )
        self.rows.append(row)
        if self.settings.profile is not None and cand.profile is not None:
            self._profile(cand, cand.profile, feeds, row, self.settings.profile)

    def _variation(self, cand: Timed, shapes: Shapes, stats: LatencyStats) -> tuple[str, ...]:
        limit = self.settings.timing.cv_warning
        if stats.cv <= limit:
            return ()
        text = (
            f"high variation: CV {stats.cv:.1%} > {limit:.0%} "
            "(busy machine, frequency scaling or too short a run)"
        )
        log.warning("%s %s: %s", cand.label, shapes_text(shapes), text)
        return (text,)

    def _profile(
        self,
        cand: Timed,
        profile: Callable[[list[np.ndarray], ProfileConfig], LayerProfile],
        feeds: Feeds,
        row: BenchRow,
        config: ProfileConfig,
    ) -> None:
        self.say(f"profile {cand.label} {shapes_text(row.shapes)} ({config.runs} runs)")
        try:
            layers = profile([feeds[s.name] for s in cand.inputs], config)
        except EdgeportError as exc:
            self.warnings.append(f"no profile of {cand.label} {shapes_text(row.shapes)}: {exc}")
            log.warning("%s", self.warnings[-1])
            return
        self.profiles.append(
            ProfiledRow(
                row.backend, row.precision, row.device, row.artifact, row.batch, row.shapes, layers
            )
        )


# --------------------------------------------------------------------------------------------
# The benchmark


def _reference(model: ModelSource, settings: BenchSettings) -> StoredReference | None:
    wanted = settings.parity or (settings.inputs in ("auto", "reference") and not settings.images)
    if model.manifest is None or not wanted:
        return None
    return load_reference(_bundle_dir(model), model.manifest)


def _input_kind(settings: BenchSettings, reference: StoredReference | None) -> str:
    """``inputs="auto"`` made concrete: the stored reference inputs when the bundle has them and
    neither shape sets nor value ranges ask for other data, else synthetic."""
    if settings.inputs != "auto":
        return settings.inputs
    other = settings.shapes or settings.value_ranges
    return "reference" if reference is not None and not other else "synthetic"


def _reference_text(
    model: ModelSource, settings: BenchSettings, ref: StoredReference | None
) -> str:
    if not settings.parity:
        return "not checked (parity off)"
    if ref is None:
        bare = "a bare " + {"onnx": "ONNX file", "engine": "TensorRT engine"}.get(
            model.kind, f"{model.kind} file"
        )
        what = "the bundle" if model.manifest is not None else bare
        return f"no reference: {what} stores no reference outputs"
    where = f", {ref.dataset} {ref.split or ''}".rstrip() if ref.dataset else ""
    return f"the bundle's stored reference outputs ({ref.count} samples{where}; PyTorch fp32)"


def benchmark(
    source: str | Path,
    settings: BenchSettings | None = None,
    *,
    extra_plans: Sequence[Plan] = (),
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time every runnable (backend, precision) of ``source`` (a bundle directory, an ``.onnx``
    file or a TensorRT engine) and the PyTorch baselines, at every workload of ``settings``.

    All rows are timed on the same inputs. Baselines run on each device the selected backends
    use (fp32, and fp16 on CUDA). ``extra_plans`` adds candidates of the caller's own (e.g. a
    differently instrumented session), measured the same way.
    """
    from edgeport.runtime.envinfo import collect_environment

    settings = settings or BenchSettings()
    model = resolve_source(source)
    if "bf16" in settings.precisions:
        model = with_bf16(model)
    reference = _reference(model, settings)
    data = input_data(
        model,
        reference,
        kind=_input_kind(settings, reference),
        images=settings.images,
        value_ranges=settings.value_ranges,
        seed=settings.seed,
    )
    workloads = _workloads(model, settings)
    plans, skipped = _plans(model, settings, workloads)
    classifier = model.card is not None and model.card.task == "classification"
    say = progress or (lambda msg: log.info("%s", msg))
    run = _BenchRun(settings, data, reference if settings.parity else None, classifier, say)
    run.skipped += skipped
    for plan in [*plans, *extra_plans]:
        run.plan(plan, workloads)
    eager_expected = EAGER in settings.baselines and baseline_unavailable(model) is None
    if eager_expected and not any(r.backend == EAGER for r in run.rows):
        run.warnings.append("PyTorch eager did not run: rows have no speed-up ratio")
    config = settings.to_dict() | {
        "input_data": data.source,
        "extra": [f"{p.backend} {p.precision} ({p.device})" for p in extra_plans],
        "speedup": SPEEDUP_TEXT,
    }
    return BenchResult(
        rows=speedups(run.rows),
        skipped=run.skipped,
        config=config,
        environment=collect_environment(threads=settings.threads),
        model=model_record(model, run.specs),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        warnings=run.warnings,
        parity={"reference": _reference_text(model, settings, reference), "candidates": run.parity},
        profiles=run.profiles,
    )
