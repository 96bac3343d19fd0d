"""The result of ``edgeport bench``: its rows, what was skipped, per-layer profiles, and the
versioned JSON they are written as.

One field table (:data:`ROW_FIELDS`) describes a row: ``BenchRow.to_dict``/``from_dict``, the
CSV columns and the schema documentation (``tools/report.py``, ``benchmarks/README.md``) all
read it. Schema 3 (this one) adds the ``auto`` row (the model as ``load(backend="auto")`` opens
it, with ``chosen_backend`` and ``choice_basis``); schema 2 benchmarks any model: rows carry
their input ``shapes`` and throughput in samples per second; schema-2 and schema-1 results
(bundles only) are still read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from operator import attrgetter
from typing import Any

from edgeport.runtime.errors import InputError
from edgeport.runtime.plugins import EAGER
from edgeport.runtime.tools.profile import LayerProfile
from edgeport.runtime.tools.timing import LatencyStats

RESULT_SCHEMA = "edgeport.bench"
RESULT_SCHEMA_VERSION = 3
CUDA_GRAPH = "torch-cuda-graph"


def candidate_label(backend: str, cuda_graph: bool, precision: str) -> str:
    """``onnxruntime-cuda+graph fp16``: a backend (marked when it replays a CUDA graph) and a
    precision."""
    graph = "+graph" if cuda_graph and backend != CUDA_GRAPH else ""
    return f"{backend}{graph} {precision}"


def auto_label(chosen: str, precision: str) -> str:
    """``auto (openvino int8)``: edgeport's automatic choice and what it chose."""
    return f"auto ({chosen} {precision})"


def shapes_text(shapes: Mapping[str, Sequence[int]]) -> str:
    """``x:1x3x224x224 ids:1x16``"""
    return " ".join(f"{name}:{'x'.join(map(str, dims))}" for name, dims in shapes.items())


# --------------------------------------------------------------------------------------------
# Results: one field table describes a row (JSON, CSV and the schema docs all read it)


@dataclass(frozen=True)
class BenchRow:
    """The measurement of one candidate at one set of input shapes."""

    backend: str
    kind: str
    precision: str
    device: str
    batch: int
    latency: LatencyStats
    throughput: float  # samples per second
    timer: str
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    artifact: str | None = None
    cuda_graph: bool = False
    stages: dict[str, LatencyStats] | None = None
    speedup_vs_eager: float | None = None
    parity_top1: float | None = None
    parity_max_abs: float | None = None
    parity_passed: bool | None = None
    warnings: tuple[str, ...] = ()
    chosen_backend: str | None = None  # the auto row: the backend auto chose
    choice_basis: str | None = None  # the auto row: what decided

    @property
    def label(self) -> str:
        if self.chosen_backend is not None:
            return auto_label(self.chosen_backend, self.precision)
        return candidate_label(self.backend, self.cuda_graph, self.precision)

    @property
    def signature(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """The input shapes without their batch axis: rows of one signature differ by batch."""
        return tuple((name, tuple(dims[1:])) for name, dims in self.shapes.items())

    def to_dict(self) -> dict[str, Any]:
        return {f.key: f.get(self) for f in ROW_FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchRow:
        kwargs: dict[str, Any] = {}
        for f in ROW_FIELDS:
            if f.load is not None and f.key in data:
                kwargs.update(f.load(data[f.key]))
        return cls(**kwargs)


@dataclass(frozen=True)
class RowField:
    """One field of a row: its JSON key, types and meaning (the schema docs), how it is read
    from a :class:`BenchRow` and loaded back (None: derived, not loaded), and its CSV columns."""

    key: str
    types: tuple[str, ...]
    doc: str
    get: Callable[[BenchRow], Any]
    load: Callable[[Any], dict[str, Any]] | None
    columns: tuple[str, ...]
    cells: Callable[[Any], tuple[str, ...]]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _plain(key: str, types: tuple[str, ...], doc: str, attr: str | None = None) -> RowField:
    name = attr or key
    return RowField(
        key, types, doc, attrgetter(name), lambda v: {name: v}, (key,), lambda v: (_cell(v),)
    )


_LATENCY_KEYS = ("mean", "std", "min", "max", "p50", "p90", "p95", "p99", "cv")
_STAGES = ("h2d", "compute", "d2h")
_PARITY_KEYS = (
    ("top1_agreement", "parity_top1"),
    ("max_abs", "parity_max_abs"),
    ("passed", "parity_passed"),
)

ROW_FIELDS: tuple[RowField, ...] = (
    _plain(
        "backend",
        ("string",),
        "onnxruntime-cpu, openvino, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt (edgeport); "
        'auto (edgeport\'s own choice: load(backend="auto", expected_batch=batch)); '
        "torch, torch-compile, torch-cuda-graph (baselines)",
    ),
    _plain(
        "chosen_backend",
        ("string", "null"),
        "the auto row: the backend auto chose here (its artifact and precision are the row's); "
        "null for other rows",
    ),
    _plain(
        "choice_basis",
        ("string", "null"),
        "the auto row: what decided (a tuning record that holds here, with its numbers, or "
        "the fixed rule: Model.choice_basis); null for other rows",
    ),
    _plain("kind", ("string",), '"edgeport" (runtime backend) or "baseline" (PyTorch)'),
    _plain("precision", ("string",), "fp32, fp16, int8 or bf16 (unknown for a bare engine)"),
    _plain("device", ("string",), "cpu or cuda"),
    _plain("artifact", ("string", "null"), "bundle artifact or file name (null for baselines)"),
    _plain("cuda_graph", ("boolean",), "whether calls replay a captured CUDA graph"),
    _plain("batch", ("integer",), "axis 0 of the first input (samples per call)"),
    RowField(
        "shapes",
        ("object",),
        "{input name: [dims]}: the shape of every input in this row",
        lambda r: {k: list(v) for k, v in r.shapes.items()},
        lambda v: {"shapes": {k: tuple(d) for k, d in v.items()}},
        ("shapes",),
        lambda v: (shapes_text(v),),
    ),
    _plain(
        "timer",
        ("string",),
        "perf_counter_ns (host clock around a synchronous call), "
        "cuda-events (cuda-python) or torch.cuda.Event",
    ),
    RowField(
        "iterations",
        ("integer",),
        "timed calls after warm-up",
        lambda r: r.latency.count,
        None,
        ("iterations",),
        lambda v: (str(v),),
    ),
    RowField(
        "latency_ms",
        ("object",),
        "count, mean, std, min, max, p50, p90, p95, p99, cv (ms; cv = std / mean)",
        lambda r: r.latency.to_dict(),
        lambda v: {"latency": LatencyStats.from_dict(v)},
        tuple("cv" if k == "cv" else f"{k}_ms" for k in _LATENCY_KEYS),
        lambda v: tuple(f"{v[k]:.6f}" for k in _LATENCY_KEYS),
    ),
    _plain(
        "samples_per_s",
        ("number",),
        "throughput: samples per second = batch * 1000 / mean latency",
        "throughput",
    ),
    RowField(
        "stages_ms",
        ("object", "null"),
        "GPU only: {h2d, compute, d2h}, each like latency_ms",
        lambda r: {k: s.to_dict() for k, s in r.stages.items()} if r.stages else None,
        lambda v: {"stages": {k: LatencyStats.from_dict(s) for k, s in v.items()} if v else None},
        tuple(f"{s}_p50_ms" for s in _STAGES),
        lambda v: tuple(f"{v[s]['p50']:.6f}" if v and s in v else "" for s in _STAGES),
    ),
    _plain(
        "speedup_vs_eager",
        ("number", "null"),
        "PyTorch eager fp32 p50 / this row's p50, same device and input shapes; null when "
        "eager did not run",
    ),
    RowField(
        "parity",
        ("object",),
        "{top1_agreement (classifier logits), max_abs (largest over the outputs), passed "
        "(every output within its precision's tolerance)} on the bundle's stored reference; "
        "nulls without a reference",
        lambda r: {key: getattr(r, attr) for key, attr in _PARITY_KEYS},
        lambda v: {attr: v.get(key) for key, attr in _PARITY_KEYS},
        tuple(attr for _, attr in _PARITY_KEYS),
        lambda v: tuple(_cell(v.get(key)) for key, _ in _PARITY_KEYS),
    ),
    RowField(
        "warnings",
        ("array",),
        "e.g. high coefficient of variation",
        lambda r: list(r.warnings),
        lambda v: {"warnings": tuple(v)},
        ("warnings",),
        lambda v: ("; ".join(v),),
    ),
)
CSV_COLUMNS = tuple(column for f in ROW_FIELDS for column in f.columns)


def csv_cells(row: BenchRow) -> list[str]:
    """One CSV line of ``row``, in :data:`CSV_COLUMNS` order."""
    data = row.to_dict()
    return [cell for f in ROW_FIELDS for cell in f.cells(data[f.key])]


@dataclass(frozen=True)
class Skipped:
    """A backend/precision/baseline that could not be measured here, and why."""

    backend: str
    precision: str | None
    device: str | None
    reason: str
    artifact: str | None = None
    batch: int | None = None
    shapes: Mapping[str, Sequence[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shapes"] = {k: list(v) for k, v in self.shapes.items()} if self.shapes else None
        return data


@dataclass(frozen=True)
class ProfiledRow:
    """The per-layer profile of one row's candidate at the row's input shapes."""

    backend: str
    precision: str
    device: str
    artifact: str | None
    batch: int
    shapes: Mapping[str, tuple[int, ...]]
    profile: LayerProfile

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "profile"}
        data["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        return {**data, **self.profile.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfiledRow:
        return cls(
            backend=data["backend"],
            precision=data["precision"],
            device=data["device"],
            artifact=data.get("artifact"),
            batch=int(data["batch"]),
            shapes={k: tuple(v) for k, v in data["shapes"].items()},
            profile=LayerProfile.from_dict(data),
        )


@dataclass
class BenchResult:
    """Everything a benchmark run measured, with its settings, environment and model."""

    rows: list[BenchRow]
    skipped: list[Skipped]
    config: dict[str, Any]
    environment: dict[str, Any]
    model: dict[str, Any]
    created: str = ""
    warnings: list[str] = field(default_factory=list)
    parity: dict[str, Any] = field(default_factory=dict)
    profiles: list[ProfiledRow] = field(default_factory=list)

    def single_stream(self) -> list[dict[str, Any]]:
        """p90 latency at batch 1 per candidate and input shapes (MLPerf single-stream),
        fastest first."""
        out = [
            {
                **_candidate(r),
                "p90_ms": r.latency.p90,
                "speedup_vs_eager": r.speedup_vs_eager,
            }
            for r in self.rows
            if r.batch == 1
        ]
        return sorted(out, key=lambda d: d["p90_ms"])

    def offline(self) -> list[dict[str, Any]]:
        """Peak throughput over the batch sizes per candidate and shapes besides the batch axis,
        highest first."""
        best: dict[tuple[Any, ...], BenchRow] = {}
        for r in self.rows:
            precision = None if r.chosen_backend else r.precision  # auto chooses per batch
            key = (r.backend, precision, r.device, r.cuda_graph, r.signature)
            if key not in best or r.throughput > best[key].throughput:
                best[key] = r
        out = [
            {**_candidate(r), "batch": r.batch, "samples_per_s": r.throughput}
            for r in best.values()
        ]
        return sorted(out, key=lambda d: -d["samples_per_s"])

    def find(
        self,
        backend: str,
        precision: str,
        batch: int,
        device: str | None = None,
        cuda_graph: bool | None = None,
    ) -> BenchRow | None:
        """The first row of this backend, precision and batch (and device, CUDA graph)."""
        for r in self.rows:
            if (r.backend, r.precision, r.batch) == (backend, precision, batch) and (
                (device is None or r.device == device)
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
            "model": self.model,
            "config": self.config,
            "environment": self.environment,
            "rows": [r.to_dict() for r in self.rows],
            "skipped": [s.to_dict() for s in self.skipped],
            "parity": self.parity,
            "profiles": [p.to_dict() for p in self.profiles],
            "summary": summary,
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchResult:
        """A result from its JSON; schema-1 results (bundles only) are read too."""
        if data.get("schema") != RESULT_SCHEMA:
            raise InputError(f"not an edgeport benchmark result: schema {data.get('schema')!r}")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > RESULT_SCHEMA_VERSION:
            raise InputError(
                f"benchmark result schema version {version!r} is not one this edgeport reads "
                f"(<= {RESULT_SCHEMA_VERSION})"
            )
        if version == 1:
            data = _upgrade_v1(data)  # a v2 row reads as is: it has no auto fields
        return cls(
            rows=[BenchRow.from_dict(r) for r in data["rows"]],
            skipped=[Skipped(**s) for s in data.get("skipped", [])],
            config=dict(data.get("config", {})),
            environment=dict(data.get("environment", {})),
            model=dict(data.get("model", {})),
            created=str(data.get("created", "")),
            warnings=list(data.get("warnings", [])),
            parity=dict(data.get("parity", {})),
            profiles=[ProfiledRow.from_dict(p) for p in data.get("profiles", [])],
        )


def _candidate(r: BenchRow) -> dict[str, Any]:
    """The keys that name a row's candidate and shapes in the scenario summaries."""
    return {
        "backend": r.backend,
        "chosen_backend": r.chosen_backend,
        "precision": r.precision,
        "device": r.device,
        "cuda_graph": r.cuda_graph,
        "shapes": {k: list(v) for k, v in r.shapes.items()},
    }


def _upgrade_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-1 result in schema-2 terms: ``bundle`` is ``model``, rows have no shapes and
    their throughput was ``throughput_ips`` (images per second)."""
    rows = [
        {
            **{k: v for k, v in r.items() if k != "throughput_ips"},
            "samples_per_s": r["throughput_ips"],
        }
        for r in data["rows"]
    ]
    skipped = [{**s, "shapes": None} for s in data.get("skipped", [])]
    return {**data, "rows": rows, "skipped": skipped, "model": data.get("bundle", {})}


def speedups(rows: Sequence[BenchRow]) -> list[BenchRow]:
    """Fill ``speedup_vs_eager``: eager fp32 p50 / row p50, same device and input shapes."""

    def key(r: BenchRow) -> tuple[Any, ...]:
        return (r.device, r.batch, tuple((k, tuple(v)) for k, v in r.shapes.items()))

    eager = {
        key(r): r.latency.p50
        for r in rows
        if r.backend == EAGER and r.precision == "fp32" and not r.cuda_graph
    }
    out = []
    for r in rows:
        ref = eager.get(key(r))
        ratio = ref / r.latency.p50 if ref is not None and r.latency.p50 > 0 else None
        out.append(replace(r, speedup_vs_eager=ratio))
    return out
