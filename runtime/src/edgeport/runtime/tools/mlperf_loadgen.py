"""``edgeport bench loadgen MODEL --scenario SCENARIO``: MLPerf Inference's LoadGen drives edgeport.

The official ``mlcommons-loadgen`` package (module ``mlperf_loadgen``) issues the queries and
judges the run; edgeport only answers them:

- **system under test**: the model as ``load()`` opens it (``auto`` by default), behind
  ``lg.ConstructSUT(issue_queries, flush_queries)``. SingleStream, MultiStream and Offline
  queries are answered on LoadGen's thread, a query's samples as batches of up to ``batch``
  (MultiStream's 8 samples as one batch); Server queries go to a worker thread that runs what
  has arrived, up to ``batch`` samples per call.
- **query sample library**: the bundle's stored reference inputs, an ``.npz`` file or seeded
  synthetic samples, held in memory (``lg.ConstructQSL(total, performance_count, load,
  unload)``).
- **settings**: ``TestSettings.FromConfig`` with the ``mlperf.conf`` built into the installed
  LoadGen (the current MLPerf rules: 600 s minimum duration in every scenario, SingleStream's
  90th and MultiStream's 99th percentile with 8 samples per query, Server's 99th percentile
  within its target latency, and their minimum query counts), PerformanceOnly. The expected
  latency or QPS that sizes the run comes from a short timing of the model first.
  ``quick`` asks for more than ``QUICK_DURATION_MS`` and stops after it (``max_duration_ms``;
  Offline's one query is sized to last about as long), so LoadGen itself says INVALID and
  why: the reasons are read from its summary.

LoadGen writes ``mlperf_log_summary.txt`` and ``mlperf_log_detail.txt`` (and its accuracy log;
its trace is switched off) to ``log_dir``; the result carries the summary's own metric and
VALID/INVALID.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.errors import BackendUnavailable, ConfigError, EdgeportError
from edgeport.runtime.feeds import Feeds, resolve_shapes
from edgeport.runtime.io import write_report
from edgeport.runtime.tools.timing import LatencyStats, TimingConfig, time_host

log = logging.getLogger(__name__)

INSTALL = "pip install 'edgeport-runtime[loadgen]'"
SCENARIOS = {
    "single-stream": "SingleStream",
    "multi-stream": "MultiStream",
    "offline": "Offline",
    "server": "Server",
}
QUICK_DURATION_MS = 1000
OFFLINE_QUICK_FACTOR = 10
MLPERF_MIN_DURATION_S = 600  # every scenario, in the mlperf.conf LoadGen 5 and 6 carry
SYNTHETIC_SAMPLES = 64
MLPERF_MODEL = "edgeport"  # a name no mlperf.conf entry names: only its "*" rules apply
_NS = 1e6  # ns per ms


def import_loadgen() -> ModuleType:
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise BackendUnavailable(
            f"edgeport bench loadgen needs MLPerf LoadGen (mlcommons-loadgen): {INSTALL}"
        ) from exc
    return mlperf_loadgen


@dataclass(frozen=True)
class LoadGenSettings:
    """One LoadGen run. ``batch``: most samples per model call (Offline and Server; default 8,
    MultiStream always its samples per query). ``target_qps``: Server's scheduled QPS and
    Offline's expected QPS (default: from a short timing; Server at half the measured
    single-sample rate). ``target_latency_ms``: Server's bound on the 99th percentile (default:
    LoadGen's mlperf.conf). ``inputs``: "auto" (the bundle's reference inputs, else
    synthetic), "reference", "synthetic" or an ``.npz`` file."""

    scenario: str = "single-stream"
    quick: bool = False
    backend: str = "auto"
    precision: str | None = None
    threads: int | None = None
    batch: int = 8
    target_qps: float | None = None
    target_latency_ms: float | None = None
    inputs: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.scenario not in SCENARIOS:
            problems.append(f"scenario must be one of {list(SCENARIOS)}, got {self.scenario!r}")
        if self.batch < 1:
            problems.append(f"batch must be >= 1, got {self.batch}")
        for what in ("target_qps", "target_latency_ms"):
            value = getattr(self, what)
            if value is not None and not value > 0:
                problems.append(f"{what} must be > 0, got {value}")
        if problems:
            raise ConfigError("invalid LoadGen settings: " + "; ".join(problems))


@dataclass(frozen=True)
class Summary:
    """What LoadGen's ``mlperf_log_summary.txt`` says: the scenario's metric, VALID/INVALID,
    each constraint, and why a run is INVALID (its recommendations, early stopping)."""

    scenario: str
    metric: str
    value: float | None
    unit: str
    valid: bool
    constraints: dict[str, bool]
    reasons: tuple[str, ...]
    stats: dict[str, float]


_METRICS = (  # (summary line, metric name, unit, scale), the scenario's headline first
    (r"^(\d+(?:\.\d+)?)th percentile latency \(ns\)\s*:", "percentile latency", "ms", 1 / _NS),
    (r"^Samples per second\s*:", "samples per second", "samples/s", 1.0),
    (r"^Scheduled samples per second\s*:", "scheduled samples per second", "samples/s", 1.0),
    (r"^Completed samples per second\s*:", "completed samples per second", "samples/s", 1.0),
)


def parse_summary(text: str) -> Summary:
    """Read LoadGen's summary; ``ConfigError`` when it is not one."""
    lines = [line.rstrip() for line in text.splitlines()]
    fields = dict(_pairs(lines))
    if "Result is" not in fields:
        raise ConfigError("not a LoadGen summary: it has no 'Result is' line")
    metric, value, unit = "", None, ""
    for pattern, name, metric_unit, scale in _METRICS:
        found = next((m for line in lines if (m := re.match(pattern, line))), None)
        if found is not None:
            percentile = f"{float(found.group(1)):g}th " if found.groups() else ""
            metric, unit = percentile + name, metric_unit
            value = float(found.string.rsplit(":", 1)[1]) * scale
            break
    constraints = {
        key: val.lower() == "yes" for key, val in fields.items() if key.endswith("satisfied")
    }
    stats = {}
    for key, val in fields.items():
        try:
            stats[key] = float(val)
        except ValueError:
            continue
    valid = fields["Result is"] == "VALID"
    return Summary(
        scenario=fields.get("Scenario", ""),
        metric=metric,
        value=value,
        unit=unit,
        valid=valid,
        constraints=constraints,
        reasons=() if valid else _reasons(lines, constraints),
        stats=stats,
    )


def _pairs(lines: Sequence[str]) -> list[tuple[str, str]]:
    """``key : value`` lines, both stripped."""
    pairs = [line.split(":", 1) for line in lines if ":" in line]
    return [(key.strip(), value.strip()) for key, value in pairs]


def _reasons(lines: Sequence[str], constraints: Mapping[str, bool]) -> tuple[str, ...]:
    """Why a run is INVALID: the constraints it failed, then LoadGen's own explanation (its
    recommendations and the early-stopping result)."""
    out = [f"{name}: NO" for name, ok in constraints.items() if not ok]
    section = False
    for line in lines:
        if line.startswith(("Recommendations:", "Early Stopping Result:")):
            section = True
        elif section and line.strip().startswith("*"):
            out.append(line.strip(" *"))
        elif section and line.startswith(" ") and out:
            out[-1] += " " + line.strip()  # a wrapped line
        elif not line.strip() or line.startswith("="):
            section = False
    return tuple(out)


# --------------------------------------------------------------------------------------------
# The system under test


class _System:
    """edgeport's model answering LoadGen's queries (see the module docstring)."""

    def __init__(self, lg: ModuleType, model: Any, samples: Feeds, batch: int, server: bool):
        self.lg, self.model, self.samples, self.batch = lg, model, samples, batch
        self.output = model.outputs[0].name
        self.errors: list[str] = []
        self.calls = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._serve, daemon=True) if server else None
        if self._worker is not None:
            self._worker.start()

    def issue(self, query_samples: Sequence[Any]) -> None:
        if self._worker is not None:
            for sample in query_samples:
                self._queue.put(sample)
            return
        for start in range(0, len(query_samples), self.batch):
            self._answer(query_samples[start : start + self.batch])

    def flush(self) -> None:
        """Nothing is held back: every issued sample is already queued or answered."""

    def close(self) -> None:
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < self.batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                group.append(more)
            self._answer(group)

    def _answer(self, group: Sequence[Any]) -> None:
        lg = self.lg
        indices = [s.index for s in group]
        try:
            feeds = {name: array[indices] for name, array in self.samples.items()}
            out = np.ascontiguousarray(self.model.infer(feeds)[self.output])
            rows = [out[i] for i in range(len(group))]
            responses = [
                lg.QuerySampleResponse(s.id, row.ctypes.data, row.nbytes)
                for s, row in zip(group, rows, strict=True)
            ]
        except EdgeportError as exc:  # answered empty, so LoadGen ends; the run reports it
            self.errors.append(str(exc))
            responses = [lg.QuerySampleResponse(s.id, 0, 0) for s in group]
        self.calls += 1
        lg.QuerySamplesComplete(responses)


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class LoadGenResult:
    settings: LoadGenSettings
    summary: Summary
    model: dict[str, Any]
    samples: dict[str, Any]
    test_settings: dict[str, Any]
    log_dir: str
    environment: dict[str, Any]
    created: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "edgeport.loadgen",
            "schema_version": 1,
            "created": self.created,
            "scenario": self.settings.scenario,
            "result": "VALID" if self.summary.valid else "INVALID",
            "metric": {
                "name": self.summary.metric,
                "value": self.summary.value,
                "unit": self.summary.unit,
            },
            "summary": {**asdict(self.summary), "reasons": list(self.summary.reasons)},
            "model": self.model,
            "samples": self.samples,
            "config": asdict(self.settings),
            "test_settings": self.test_settings,
            "logs": {
                "dir": self.log_dir,
                "summary": str(Path(self.log_dir) / "mlperf_log_summary.txt"),
                "detail": str(Path(self.log_dir) / "mlperf_log_detail.txt"),
            },
            "environment": self.environment,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadGenResult:
        """A result as :meth:`to_dict` wrote it (``edgeport.loadgen`` schema 1)."""
        if data.get("schema") != "edgeport.loadgen" or data.get("schema_version") != 1:
            raise ConfigError(
                "expected an edgeport.loadgen schema 1 result, got "
                f"{data.get('schema')!r} version {data.get('schema_version')!r}"
            )
        summary = data["summary"]
        return cls(
            settings=LoadGenSettings(**data["config"]),
            summary=Summary(**{**summary, "reasons": tuple(summary["reasons"])}),
            model=data["model"],
            samples=data["samples"],
            test_settings=data["test_settings"],
            log_dir=data["logs"]["dir"],
            environment=data["environment"],
            created=data["created"],
            notes=list(data["notes"]),
        )


def _samples(model: Any, source: Path, settings: LoadGenSettings) -> tuple[Feeds, str]:
    """The query sample library: every stored sample (or SYNTHETIC_SAMPLES synthetic ones), one
    per index of axis 0, with the model's dtypes."""
    from edgeport.runtime.reference import load_reference
    from edgeport.runtime.source import resolve_source
    from edgeport.runtime.tools.bench_inputs import input_data

    resolved = resolve_source(source)
    reference = None
    if resolved.manifest is not None and settings.inputs in ("auto", "reference"):
        bundle = source if resolved.kind == "bundle" else source.parent
        reference = load_reference(bundle, resolved.manifest)
    kind = settings.inputs
    if kind == "auto":
        kind = "reference" if reference is not None else "synthetic"
    data = input_data(resolved, reference, kind=kind, seed=settings.seed)
    first = model.inputs[0]
    count = len(data.samples[first.name]) if data.samples else SYNTHETIC_SAMPLES
    shapes = {k: tuple(v) for k, v in data.shapes.items() if k in {s.name for s in model.inputs}}
    base = resolve_shapes(model.inputs, shapes)
    shapes[first.name] = (count, *base[first.name][1:])
    return data.feeds(model.inputs, resolve_shapes(model.inputs, shapes)), data.source


def _estimate(model: Any, samples: Feeds, batch: int) -> LatencyStats:
    """A short timing of one call at ``batch``: what sizes LoadGen's run (its expected
    latency or QPS), never a result."""
    feeds = {name: array[:batch] for name, array in samples.items()}
    config = TimingConfig(warmup_s=0.2, duration_s=0.5, min_iterations=3)
    return LatencyStats.from_samples(time_host(lambda: model.infer(feeds), config))


def mlperf_settings(
    lg: ModuleType, settings: LoadGenSettings, single: LatencyStats, batched: LatencyStats
) -> Any:
    """MLPerf's rules from the installed LoadGen's mlperf.conf, sized by the estimates."""
    scenario = SCENARIOS[settings.scenario]
    ts = lg.TestSettings()
    if ts.FromConfig("", MLPERF_MODEL, scenario, 0) != 0:
        raise ConfigError(f"LoadGen could not read its built-in mlperf.conf for {scenario}")
    ts.scenario = getattr(lg.TestScenario, scenario)
    ts.mode = lg.TestMode.PerformanceOnly
    ts.single_stream_expected_latency_ns = int(single.p50 * _NS)
    ts.multi_stream_expected_latency_ns = int(batched.p50 * _NS)
    rate = settings.batch * 1000 / batched.mean
    ts.offline_expected_qps = settings.target_qps or rate
    ts.server_target_qps = settings.target_qps or 0.5 * 1000 / single.mean
    if settings.target_latency_ms is not None:
        ts.server_target_latency_ns = int(settings.target_latency_ms * _NS)
    if settings.quick:
        # LoadGen pre-generates min duration x rate queries (600 s of a fast model fill
        # gigabytes), so quick asks for twice QUICK_DURATION_MS and stops after one: LoadGen
        # itself then says why the run is INVALID. Offline is one query of expected QPS x min
        # duration x 1.1 samples, never cut short: it asks for OFFLINE_QUICK_FACTOR times as
        # long and sizes the query to last about QUICK_DURATION_MS at the estimated rate, so
        # that a system many times slower than its estimate still stops short of the minimum.
        ts.min_duration_ms = 2 * QUICK_DURATION_MS
        ts.max_duration_ms = QUICK_DURATION_MS
        if scenario == "Offline":
            ts.min_duration_ms = OFFLINE_QUICK_FACTOR * QUICK_DURATION_MS
            ts.offline_expected_qps /= OFFLINE_QUICK_FACTOR
    return ts


_REPORTED = (
    "min_duration_ms",
    "max_duration_ms",
    "min_query_count",
    "single_stream_expected_latency_ns",
    "single_stream_target_latency_percentile",
    "multi_stream_samples_per_query",
    "multi_stream_expected_latency_ns",
    "multi_stream_target_latency_percentile",
    "offline_expected_qps",
    "server_target_qps",
    "server_target_latency_ns",
    "server_target_latency_percentile",
)


def run_loadgen(
    source: str | Path,
    settings: LoadGenSettings,
    log_dir: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> LoadGenResult:
    """Run LoadGen's ``settings.scenario`` against the model; its logs go to ``log_dir``."""
    from edgeport.runtime.envinfo import collect_environment
    from edgeport.runtime.loader import load

    lg = import_loadgen()
    say = progress or (lambda message: log.info("%s", message))
    source, log_dir = Path(source), Path(log_dir)
    scenario = SCENARIOS[settings.scenario]
    batch = 8 if scenario == "MultiStream" else settings.batch
    with load(
        source,
        backend=settings.backend,
        precision=settings.precision,
        threads=settings.threads,
        expected_batch=1 if scenario == "SingleStream" else batch,
    ) as model:
        batch = min(batch, model.batch_range.max)
        samples, where = _samples(model, source, settings)
        say(f"loadgen {scenario}: timing {model.backend} {model.precision} to size the run")
        single = _estimate(model, samples, 1)
        ts = mlperf_settings(lg, settings, single, _estimate(model, samples, batch))
        log_dir.mkdir(parents=True, exist_ok=True)
        system = _System(lg, model, samples, batch, server=scenario == "Server")
        count = len(next(iter(samples.values())))
        sut = lg.ConstructSUT(system.issue, system.flush)
        qsl = lg.ConstructQSL(count, count, lambda _: None, lambda _: None)
        logs = lg.LogSettings()
        logs.log_output.outdir = str(log_dir)
        logs.log_output.copy_summary_to_stdout = False
        logs.enable_trace = False  # its trace is ~150 bytes per sample: 90 MB in 600 s
        say(f"loadgen {scenario}: running (min duration {ts.min_duration_ms / 1000:g} s)")
        try:
            lg.StartTestWithLogSettings(sut, qsl, ts, logs)
        finally:
            system.close()
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        described = {
            "path": str(source),
            "backend": model.backend,
            "precision": model.precision,
            "artifact": model.artifact.name if model.artifact else source.name,
            "choice_basis": model.choice_basis,
            "batch": batch,
            "calls": system.calls,
        }
    summary_path = log_dir / "mlperf_log_summary.txt"
    summary = parse_summary(summary_path.read_text(encoding="utf-8", errors="replace"))
    notes = []
    if system.errors:
        notes.append(f"the model failed {len(system.errors)} calls: {system.errors[0]}")
    if settings.quick:
        notes.append(
            f"--quick stops the run after about {QUICK_DURATION_MS / 1000:g} s of "
            f"{ts.min_duration_ms / 1000:g} s (MLPerf's minimum: {MLPERF_MIN_DURATION_S} s): a "
            "test of the set-up, which LoadGen judges INVALID"
        )
    return LoadGenResult(
        settings=settings,
        summary=summary,
        model=described,
        samples={"count": count, "source": where},
        test_settings={k: getattr(ts, k) for k in _REPORTED},
        log_dir=str(log_dir),
        environment=collect_environment(threads=settings.threads),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Reports


def _metric_text(summary: Summary) -> str:
    if summary.value is None:
        return "-"
    if summary.unit == "ms":
        return f"{summary.value:.3f} ms"
    return f"{summary.value:,.1f} {summary.unit}"


def loadgen_markdown(result: LoadGenResult, *, level: int = 2) -> str:
    """The scenario's metric, VALID/INVALID and why, and the settings LoadGen ran with."""
    s, m = result.summary, result.model
    verdict = "VALID" if s.valid else "INVALID"
    lines = [
        f"{'#' * level} MLPerf LoadGen {SCENARIOS[result.settings.scenario]}: "
        f"{Path(m['path']).name}",
        "",
        f"{m['backend']} {m['precision']} ({m['artifact']}; batch up to {m['batch']}), "
        f"{result.samples['count']} samples of {result.samples['source']}. Created "
        f"{result.created}; logs in `{result.log_dir}`.",
        "",
        "| scenario | metric | value | result |",
        "|---|---|---|---|",
        f"| {SCENARIOS[result.settings.scenario]} | {s.metric or '-'} | {_metric_text(s)} | "
        f"{verdict} |",
    ]
    if "Completed samples per second" in s.stats:
        lines.append(f"\nCompleted: {s.stats['Completed samples per second']:,.1f} samples/s.")
    if s.reasons:
        lines += ["", f"Why {verdict}:", ""] + [f"- {r}" for r in s.reasons]
    settings = ", ".join(f"{k} {v:g}" for k, v in result.test_settings.items())
    lines += ["", f"Test settings: {settings}."]
    lines += [f"\n- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_loadgen(
    result: LoadGenResult,
    *,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
) -> list[Path]:
    return write_report(
        result.to_dict,
        lambda: loadgen_markdown(result),
        json_path=json_path,
        markdown_path=markdown_path,
    )
