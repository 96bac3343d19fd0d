"""Latency benchmarks: every backend and baseline timed side by side on the same inputs.

The timing engine follows the usual discipline (trtexec, MLPerf, cifar10-airbench): warm up for
a time, then repeat for a time (or a count), one sample per call, and report percentiles.

- On the host, each call is timed with ``time.perf_counter_ns``; ``Model.run`` returns numpy,
  so the device (if any) has finished when the clock is read.
- On a GPU, work that exposes :class:`DeviceStages` (host-to-device copy, compute,
  device-to-host copy, each enqueued on one stream) is timed with device events recorded
  between the stages: CUDA events through cuda-python (:class:`CudaEvent`, for ONNX Runtime in
  ``benchmarks/gpu/staged_ort.py``), ``torch.cuda.Event`` in the PyTorch baselines. The three
  stages are reported separately, like trtexec's H2D / GPU compute / D2H.

Scenarios: ``single-stream`` measures batch 1 and its headline is the p90 latency (as MLPerf
single-stream); ``offline`` measures every batch size and its headline is the peak throughput;
``both`` (the default) measures every batch size and reports both headlines.

Every row carries its speed-up against PyTorch eager fp32 on the same device and batch (ratio of
medians) when that baseline ran, and the parity of its outputs against the bundle's stored
PyTorch fp32 reference logits (top-1 agreement, max abs error).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.backends.registry import FORMAT_OF, GPU_BACKENDS, short_reason
from edgeport.runtime.bundle import PRECISIONS, Manifest
from edgeport.runtime.compare import compare_logits
from edgeport.runtime.errors import (
    ConfigError,
    EdgeportError,
    InputError,
)
from edgeport.runtime.model import run_in_chunks
from edgeport.runtime.plugins import COMPILE, EAGER, available_baselines
from edgeport.runtime.reference import load_reference_array
from edgeport.runtime.tools.timing import (
    DeviceStages,
    LatencyStats,
    TimingConfig,
    throughput,
    time_device,
    time_host,
)

log = logging.getLogger(__name__)

RESULT_SCHEMA = "edgeport.bench"
RESULT_SCHEMA_VERSION = 1
SCENARIOS = ("single-stream", "offline", "both")
RUNTIME_BACKENDS = ("onnxruntime-cpu", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")
CUDA_GRAPH = "torch-cuda-graph"
BASELINES = (EAGER, COMPILE, CUDA_GRAPH)


# --------------------------------------------------------------------------------------------
# What is benchmarked


def _label(backend: str, cuda_graph: bool, precision: str) -> str:
    graph = "+graph" if cuda_graph and backend != CUDA_GRAPH else ""
    return f"{backend}{graph} {precision}"


@dataclass
class Timed:
    """One thing to time: a runtime model or a PyTorch baseline, with how to run it."""

    backend: str  # runtime backend name, or baseline name ("torch", "torch-compile", ...)
    kind: str  # "edgeport" or "baseline"
    precision: str
    device: str  # "cpu" or "cuda"
    run: Callable[[np.ndarray], np.ndarray]
    close: Callable[[], None]
    artifact: str | None = None
    cuda_graph: bool = False
    device_stages: Callable[[np.ndarray], DeviceStages] | None = None
    max_batch: int | None = None
    min_batch: int = 1

    @property
    def label(self) -> str:
        return f"{_label(self.backend, self.cuda_graph, self.precision)} ({self.device})"


@dataclass(frozen=True)
class Skipped:
    """A backend/precision/baseline that could not be measured here, and why."""

    backend: str
    precision: str | None
    device: str | None
    reason: str
    artifact: str | None = None
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchRow:
    """The measurement of one candidate at one batch size."""

    backend: str
    kind: str
    precision: str
    device: str
    batch: int
    latency: LatencyStats
    throughput: float
    timer: str
    artifact: str | None = None
    cuda_graph: bool = False
    stages: dict[str, LatencyStats] | None = None
    speedup_vs_eager: float | None = None
    parity_top1: float | None = None
    parity_max_abs: float | None = None
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "kind": self.kind,
            "precision": self.precision,
            "device": self.device,
            "artifact": self.artifact,
            "cuda_graph": self.cuda_graph,
            "batch": self.batch,
            "timer": self.timer,
            "iterations": self.latency.count,
            "latency_ms": self.latency.to_dict(),
            "throughput_ips": self.throughput,
            "stages_ms": (
                {name: s.to_dict() for name, s in self.stages.items()} if self.stages else None
            ),
            "speedup_vs_eager": self.speedup_vs_eager,
            "parity": {"top1_agreement": self.parity_top1, "max_abs": self.parity_max_abs},
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        stages = data.get("stages_ms")
        parity = data.get("parity") or {}
        return cls(
            backend=data["backend"],
            kind=data["kind"],
            precision=data["precision"],
            device=data["device"],
            batch=int(data["batch"]),
            latency=LatencyStats.from_dict(data["latency_ms"]),
            throughput=float(data["throughput_ips"]),
            timer=data["timer"],
            artifact=data.get("artifact"),
            cuda_graph=bool(data.get("cuda_graph", False)),
            stages={k: LatencyStats.from_dict(v) for k, v in stages.items()} if stages else None,
            speedup_vs_eager=data.get("speedup_vs_eager"),
            parity_top1=parity.get("top1_agreement"),
            parity_max_abs=parity.get("max_abs"),
            warnings=tuple(data.get("warnings", ())),
        )

    @property
    def label(self) -> str:
        return _label(self.backend, self.cuda_graph, self.precision)


@dataclass
class BenchResult:
    """Everything a benchmark run measured, with its settings and environment."""

    rows: list[BenchRow]
    skipped: list[Skipped]
    config: dict[str, Any]
    environment: dict[str, Any]
    bundle: dict[str, Any]
    created: str = ""
    warnings: list[str] = field(default_factory=list)
    parity: dict[str, dict[str, Any]] = field(default_factory=dict)

    def single_stream(self) -> list[dict[str, Any]]:
        """p90 latency at batch 1 per candidate (MLPerf single-stream), fastest first."""
        out = [
            {
                "backend": r.backend,
                "precision": r.precision,
                "device": r.device,
                "cuda_graph": r.cuda_graph,
                "p90_ms": r.latency.p90,
                "speedup_vs_eager": r.speedup_vs_eager,
            }
            for r in self.rows
            if r.batch == 1
        ]
        return sorted(out, key=lambda d: d["p90_ms"])

    def offline(self) -> list[dict[str, Any]]:
        """Peak throughput over the batch sizes per candidate, highest first."""
        best: dict[tuple[str, str, str, bool], BenchRow] = {}
        for r in self.rows:
            key = (r.backend, r.precision, r.device, r.cuda_graph)
            if key not in best or r.throughput > best[key].throughput:
                best[key] = r
        out = [
            {
                "backend": r.backend,
                "precision": r.precision,
                "device": r.device,
                "cuda_graph": r.cuda_graph,
                "batch": r.batch,
                "throughput_ips": r.throughput,
            }
            for r in best.values()
        ]
        return sorted(out, key=lambda d: -d["throughput_ips"])

    def find(
        self,
        backend: str,
        precision: str,
        batch: int,
        device: str | None = None,
        cuda_graph: bool | None = None,
    ) -> BenchRow | None:
        for r in self.rows:
            if (
                r.backend == backend
                and r.precision == precision
                and r.batch == batch
                and (device is None or r.device == device)
                and (cuda_graph is None or r.cuda_graph == cuda_graph)
            ):
                return r
        return None

    def to_dict(self) -> dict[str, Any]:
        scenario = self.config.get("scenario", "both")
        summary: dict[str, Any] = {}
        if scenario in ("single-stream", "both"):
            summary["single_stream"] = self.single_stream()
        if scenario in ("offline", "both"):
            summary["offline"] = self.offline()
        return {
            "schema": RESULT_SCHEMA,
            "schema_version": RESULT_SCHEMA_VERSION,
            "created": self.created,
            "bundle": self.bundle,
            "config": self.config,
            "environment": self.environment,
            "rows": [r.to_dict() for r in self.rows],
            "skipped": [s.to_dict() for s in self.skipped],
            "parity": self.parity,
            "summary": summary,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        if data.get("schema") != RESULT_SCHEMA:
            raise InputError(f"not an edgeport benchmark result: schema {data.get('schema')!r}")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > RESULT_SCHEMA_VERSION:
            raise InputError(
                f"benchmark result schema version {version!r} is not one this edgeport reads "
                f"(<= {RESULT_SCHEMA_VERSION})"
            )
        return cls(
            rows=[BenchRow.from_dict(r) for r in data["rows"]],
            skipped=[Skipped(**s) for s in data.get("skipped", [])],
            config=dict(data.get("config", {})),
            environment=dict(data.get("environment", {})),
            bundle=dict(data.get("bundle", {})),
            created=str(data.get("created", "")),
            warnings=list(data.get("warnings", [])),
            parity=dict(data.get("parity", {})),
        )


def measure(
    candidate: Timed, batch_input: np.ndarray, config: TimingConfig
) -> tuple[LatencyStats, dict[str, LatencyStats] | None, str]:
    """Time ``candidate`` on one batch: device stages when it offers them, else the host clock."""
    if candidate.device_stages is not None:
        work = candidate.device_stages(batch_input)
        try:
            samples = time_device(work, config)
        finally:
            work.close()
        stages = {k: LatencyStats.from_samples(v) for k, v in samples.items() if k != "total"}
        return LatencyStats.from_samples(samples["total"]), stages, work.timer
    samples_ms = time_host(lambda: candidate.run(batch_input), config)
    return LatencyStats.from_samples(samples_ms), None, "perf_counter_ns"


def speedups(rows: Sequence[BenchRow]) -> list[BenchRow]:
    """Fill ``speedup_vs_eager``: eager fp32 p50 / row p50, same device and batch."""
    eager = {
        (r.device, r.batch): r.latency.p50
        for r in rows
        if r.backend == EAGER and r.precision == "fp32" and not r.cuda_graph
    }
    out = []
    for r in rows:
        ref = eager.get((r.device, r.batch))
        ratio = ref / r.latency.p50 if ref is not None and r.latency.p50 > 0 else None
        out.append(replace(r, speedup_vs_eager=ratio))
    return out


# --------------------------------------------------------------------------------------------
# Inputs and parity


@dataclass(frozen=True)
class BenchInputs:
    """The images every row is timed on, and the reference logits for parity when known."""

    images: np.ndarray  # float32 NCHW, at least the largest batch
    source: str
    reference_logits: np.ndarray | None = None  # for images[: len(reference_logits)]


def bench_inputs(
    bundle_dir: str | Path, manifest: Manifest, count: int, seed: int = 0
) -> BenchInputs:
    """At least ``count`` inputs: the bundle's real reference images (tiled if too few), else
    seeded standard-normal noise of the card's input shape."""
    bundle_dir = Path(bundle_dir)
    images = load_reference_array(bundle_dir, manifest, "inputs")
    if images is not None and images.ndim == 4 and len(images) > 0:
        logits = load_reference_array(bundle_dir, manifest, "logits")
        dataset = (manifest.reference or {}).get("dataset", "?")
        source = f"bundle reference images ({len(images)}, {dataset})"
        if len(images) < count:
            reps = math.ceil(count / len(images))
            images = np.concatenate([images] * reps)
        return BenchInputs(
            images=np.ascontiguousarray(images, dtype=np.float32),
            source=source,
            reference_logits=None if logits is None else logits.astype(np.float32),
        )
    rng = np.random.default_rng(seed)
    shape = (count, *manifest.card.input_shape)
    return BenchInputs(
        images=rng.standard_normal(shape, dtype=np.float32),
        source=f"seeded standard-normal noise (seed {seed}): the bundle has no reference images",
    )


def quick_parity(
    candidate: Timed, inputs: BenchInputs, chunk: int, *, fixed: bool = False
) -> dict[str, Any] | None:
    """Top-1 agreement and max abs logit error of ``candidate`` against the stored reference.

    Runs whole chunks of ``chunk`` images only (the largest benchmarked batch; the images beyond
    the last whole chunk are left out), so that no extra input shape is compiled or captured for
    parity. A ``fixed`` candidate (one batch size) gets no parity from fewer than ``chunk`` images.
    """
    if inputs.reference_logits is None:
        return None
    n = len(inputs.reference_logits)
    chunk = max(1, min(chunk, candidate.max_batch or chunk))
    if n >= chunk:  # whole chunks only: no extra shape (a compile, a graph) just for parity
        n = n // chunk * chunk
    elif fixed:
        return None
    got = run_in_chunks(candidate.run, inputs.images[:n], chunk, candidate.min_batch)
    got = got.astype(np.float32, copy=False)  # baselines may return fp16
    stats = compare_logits(inputs.reference_logits[:n], got).to_dict()  # non-finite -> None
    return {
        "count": n,
        "top1_agreement": stats["top1_agreement"],
        "max_abs": stats["max_abs"],
        "nonfinite": stats["nonfinite"],
        "reference": "bundle reference logits (PyTorch fp32, CPU, eval mode)",
    }


# --------------------------------------------------------------------------------------------
# Building the candidates


@dataclass
class Plan:
    """Something to measure, opened only when its turn comes and closed right after.

    ``open()`` returns a :class:`Timed`; a plan with ``per_batch`` (a captured CUDA graph has
    fixed shapes) is opened once per batch size, others once for all of them.
    """

    backend: str
    precision: str
    device: str
    open: Callable[[], Timed]
    artifact: str | None = None
    per_batch: bool = False


def _device_of(backend: str) -> str:
    return "cuda" if backend in GPU_BACKENDS else "cpu"


def _runtime_plans(
    bundle_dir: Path,
    manifest: Manifest,
    backends: Sequence[str],
    precisions: Sequence[str],
    *,
    threads: int | None,
    cuda_graph: bool,
) -> list[Plan]:
    from edgeport.runtime.model import load  # the runtime's loader (lazy: it opens backends)

    plans: list[Plan] = []
    verified: set[str] = set()  # artifacts whose sha256 an earlier open checked: not hashed again
    for backend in backends:
        fmt = FORMAT_OF[backend]
        device = _device_of(backend)
        graphs = (False, True) if cuda_graph and device == "cuda" else (False,)
        for precision in precisions:
            artifacts = [
                a for a in manifest.artifacts if a.format == fmt and a.precision == precision
            ]
            if not artifacts:
                continue
            art = artifacts[0]
            for graph in graphs:

                def open_model(
                    backend: str = backend,
                    precision: str = precision,
                    device: str = device,
                    graph: bool = graph,
                    art_name: str = art.name,
                ) -> Timed:
                    model = load(
                        bundle_dir,
                        backend=backend,
                        precision=precision,
                        threads=threads,
                        cuda_graph=graph,
                        verify=art_name not in verified,
                    )
                    verified.add(art_name)
                    return Timed(
                        backend=backend,
                        kind="edgeport",
                        precision=precision,
                        device=device,
                        run=model.run,
                        close=model.close,
                        artifact=model.artifact.name if model.artifact else art_name,
                        cuda_graph=graph,
                        max_batch=model.batch_range.max,
                        min_batch=model.batch_range.min,
                    )

                plans.append(Plan(backend, precision, device, open_model, art.name, graph))
    return plans


def _baseline_plans(
    bundle_dir: Path,
    manifest: Manifest,
    names: Sequence[str],
    devices: Sequence[str],
    *,
    threads: int | None,
    compile_precisions: Sequence[str] = ("fp32",),
) -> tuple[list[Plan], list[Skipped]]:
    classes = available_baselines()
    plans: list[Plan] = []
    skipped: list[Skipped] = []
    for name in names:
        entry = COMPILE if name == COMPILE else EAGER
        cls = classes.get(entry)
        if cls is None:
            skipped.append(
                Skipped(
                    name,
                    None,
                    None,
                    f"baseline {entry!r} is not installed: pip install edgeport-train "
                    "(it brings torch)",
                )
            )
            continue
        reason = cls.unavailable_reason()
        if reason:
            skipped.append(Skipped(name, None, None, reason))
            continue
        for device in devices:
            if name == CUDA_GRAPH and device != "cuda":
                continue
            for precision in ("fp32", "fp16") if device == "cuda" else ("fp32",):
                if name == COMPILE and precision not in compile_precisions:
                    continue
                kwargs: dict[str, Any] = {"device": device, "precision": precision}
                if threads is not None:
                    kwargs["threads"] = threads
                if name == CUDA_GRAPH:
                    kwargs["cuda_graph"] = True

                def open_baseline(
                    cls: Any = cls,
                    name: str = name,
                    device: str = device,
                    precision: str = precision,
                    kwargs: dict[str, Any] = kwargs,
                ) -> Timed:
                    base = cls(bundle_dir, manifest, **kwargs)
                    stages = getattr(base, "device_stages", None)
                    return Timed(
                        backend=name,
                        kind="baseline",
                        precision=precision,
                        device=device,
                        run=base.run,
                        close=base.close,
                        cuda_graph=name == CUDA_GRAPH,
                        device_stages=stages if callable(stages) and device == "cuda" else None,
                    )

                plans.append(Plan(name, precision, device, open_baseline))
    return plans, skipped


def _measure_plan(
    plan: Plan,
    batch_list: Sequence[int],
    inputs: BenchInputs,
    config: TimingConfig,
    *,
    parity: bool,
    say: Callable[[str], None],
) -> tuple[list[BenchRow], list[Skipped], dict[str, Any] | None]:
    """Open the plan (once, or once per batch), check parity once, time every batch size."""
    rows: list[BenchRow] = []
    skipped: list[Skipped] = []
    parity_found: dict[str, Any] | None = None
    groups = [(b,) for b in batch_list] if plan.per_batch else [tuple(batch_list)]
    for group in groups:
        try:
            cand = plan.open()
        except EdgeportError as exc:
            reason = short_reason(str(exc))
            for batch in group if plan.per_batch else (None,):
                skipped.append(
                    Skipped(plan.backend, plan.precision, plan.device, reason, plan.artifact, batch)
                )
            # listed in the result; logged quietly since "all backends" includes absent ones
            log.debug("skip %s %s (%s): %s", plan.backend, plan.precision, plan.device, reason)
            continue
        try:
            if parity and parity_found is None:
                try:
                    parity_found = quick_parity(cand, inputs, max(group), fixed=plan.per_batch)
                except EdgeportError as exc:
                    parity_found = {"error": str(exc)}
            for batch in group:
                row = _measure_batch(cand, batch, inputs, config, parity_found, say, skipped)
                if row is not None:
                    rows.append(row)
        finally:
            cand.close()
    return rows, skipped, parity_found


def _measure_batch(
    cand: Timed,
    batch: int,
    inputs: BenchInputs,
    config: TimingConfig,
    parity_found: dict[str, Any] | None,
    say: Callable[[str], None],
    skipped: list[Skipped],
) -> BenchRow | None:
    if cand.max_batch is not None and not cand.min_batch <= batch <= cand.max_batch:
        skipped.append(
            Skipped(
                cand.backend,
                cand.precision,
                cand.device,
                f"batch {batch} outside the artifact's range {cand.min_batch}..{cand.max_batch}",
                cand.artifact,
                batch,
            )
        )
        return None
    say(f"bench {cand.label} batch {batch}")
    try:
        stats, stages, timer = measure(cand, inputs.images[:batch], config)
    except EdgeportError as exc:
        skipped.append(
            Skipped(cand.backend, cand.precision, cand.device, str(exc), cand.artifact, batch)
        )
        log.warning("%s batch %d failed: %s", cand.label, batch, exc)
        return None
    warnings = []
    if stats.cv > config.cv_warning:
        warnings.append(
            f"high variation: CV {stats.cv:.1%} > {config.cv_warning:.0%} "
            "(busy machine, frequency scaling or too short a run)"
        )
        log.warning("%s batch %d: %s", cand.label, batch, warnings[-1])
    p = parity_found or {}
    return BenchRow(
        backend=cand.backend,
        kind=cand.kind,
        precision=cand.precision,
        device=cand.device,
        batch=batch,
        latency=stats,
        throughput=throughput(batch, stats),
        timer=timer,
        artifact=cand.artifact,
        cuda_graph=cand.cuda_graph,
        stages=stages,
        parity_top1=p.get("top1_agreement"),
        parity_max_abs=p.get("max_abs"),
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------------------------
# The benchmark


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


def benchmark(
    bundle_dir: str | Path,
    *,
    backends: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    batches: Sequence[int] = (1, 8, 32),
    scenario: str = "both",
    config: TimingConfig | None = None,
    threads: int | None = None,
    baselines: Sequence[str] = (EAGER,),
    cuda_graph: bool = False,
    parity: bool = True,
    compile_precisions: Sequence[str] = ("fp32",),
    extra_plans: Sequence[Plan] = (),
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Time every runnable (backend, precision) of the bundle and the baselines, per batch size.

    ``backends``/``precisions`` None = every one the bundle has and this machine can run.
    ``scenario`` ``single-stream`` measures batch 1 only. ``cuda_graph`` adds CUDA-graph rows
    for GPU backends. All rows are timed on the same input images. Baselines run on each device
    the selected backends use (fp32, and fp16 on CUDA); ``torch.compile`` only at
    ``compile_precisions`` (each batch size is a compilation). ``extra_plans`` adds candidates
    of the caller's own (e.g. a differently instrumented session), measured the same way.
    """
    from edgeport.runtime.tools.envinfo import bundle_fingerprint, collect_environment

    config = config or TimingConfig()
    if scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}; choose from {list(SCENARIOS)}")
    batch_list = (1,) if scenario == "single-stream" else parse_batches(batches)
    bundle_dir = Path(bundle_dir)
    manifest = Manifest.load(bundle_dir)
    explicit_backends = bool(backends)
    backends = tuple(backends) if backends else RUNTIME_BACKENDS
    unknown = [b for b in backends if b not in RUNTIME_BACKENDS]
    if unknown:
        raise ConfigError(f"unknown backends {unknown}; choose from {list(RUNTIME_BACKENDS)}")
    have = sorted({a.precision for a in manifest.artifacts}, key=PRECISIONS.index)
    precisions = tuple(precisions) if precisions else tuple(have)
    missing = [p for p in precisions if p not in have]
    if missing:
        raise ConfigError(f"the bundle has no artifacts of precision {missing}; it has {have}")
    unknown_base = [b for b in baselines if b not in BASELINES]
    if unknown_base:
        raise ConfigError(f"unknown baselines {unknown_base}; choose from {list(BASELINES)}")
    say = progress or (lambda msg: log.info("%s", msg))

    inputs = bench_inputs(bundle_dir, manifest, max(batch_list))
    plans = _runtime_plans(
        bundle_dir, manifest, backends, precisions, threads=threads, cuda_graph=cuda_graph
    )
    skipped: list[Skipped] = []
    if explicit_backends:
        formats = {a.format for a in manifest.artifacts}
        for backend in backends:
            if FORMAT_OF[backend] not in formats:
                skipped.append(
                    Skipped(
                        backend,
                        None,
                        _device_of(backend),
                        f"the bundle has no {FORMAT_OF[backend]} artifact"
                        + (" (export with --tensorrt)" if backend == "tensorrt" else ""),
                    )
                )
    if baselines:
        devices = sorted(
            {p.device for p in plans if p.device == "cpu" or probe_gpus().reason is None}
        )
        base_plans, base_skipped = _baseline_plans(
            bundle_dir,
            manifest,
            baselines,
            devices,
            threads=threads,
            compile_precisions=compile_precisions,
        )
        skipped += base_skipped
        plans = base_plans + plans
    plans += list(extra_plans)

    rows: list[BenchRow] = []
    parity_by_label: dict[str, dict[str, Any]] = {}
    for plan in plans:
        plan_rows, plan_skipped, found = _measure_plan(
            plan, batch_list, inputs, config, parity=parity, say=say
        )
        rows += plan_rows
        skipped += plan_skipped
        if found is not None and plan_rows:
            parity_by_label[plan_rows[0].label + f" ({plan.device})"] = found
    rows = speedups(rows)
    result_warnings = []
    if EAGER in baselines and not any(r.backend == EAGER for r in rows):
        result_warnings.append("PyTorch eager did not run: rows have no speed-up ratio")
    return BenchResult(
        rows=rows,
        skipped=skipped,
        config={
            "scenario": scenario,
            "batches": list(batch_list),
            "backends": list(backends),
            "precisions": list(precisions),
            "baselines": list(baselines),
            "threads": threads,
            "cuda_graph": cuda_graph,
            "compile_precisions": list(compile_precisions),
            "extra": [f"{p.backend} {p.precision} ({p.device})" for p in extra_plans],
            "warmup_s": config.warmup_s,
            "duration_s": config.duration_s,
            "iterations": config.iterations,
            "min_iterations": config.min_iterations,
            "cv_warning": config.cv_warning,
            "inputs": inputs.source,
            "speedup": "PyTorch eager fp32 p50 / row p50, same device and batch",
        },
        environment=collect_environment(threads=threads),
        bundle=bundle_fingerprint(bundle_dir, manifest),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        warnings=result_warnings,
        parity=parity_by_label,
    )
