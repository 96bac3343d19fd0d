"""``edgeport bench cold-start MODEL``: the time and memory of a whole fresh process that loads a
model and returns its first result, per backend, against bare ONNX Runtime and bare OpenVINO.

Each measurement is a new Python process (``python -c``) that times, inside itself, its import
(``import edgeport.runtime``, or of the bare library), the load (``load()``, or
``InferenceSession``/``Core().compile_model``) and its first result (one call on one sample
read from an ``.npz`` before the call), and reads its resident memory (``VmRSS`` from
``/proc/self/status``, else ``ru_maxrss``) right after the load and at its peak. The parent
times the whole process, from spawn to exit: the interpreter's start-up is the time until the
child's first statement (``CLOCK_MONOTONIC`` is shared by all processes) and its exit what
follows the child's last.

- **cold**: a fresh, empty ``EDGEPORT_CACHE_DIR`` (so OpenVINO compiles; ``auto``'s tuning
  record is copied in, so it makes the choice a user of this machine gets);
- **warm**: the next process on the same cache directory, which the cold one filled.

The operating system's file cache is warm for both (emptying it needs root). Each of the
``runs`` rounds runs every subject cold then warm, in a rotated order, so a busy moment spreads
over all of them; each row is the median of its processes. Every subject runs the same file
(the one ``auto`` chooses, unless a precision is given) with the same thread count; bare
OpenVINO gets the same compile properties and cache directory as edgeport's backend.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.registry import BackendNames, BackendSpec
from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.feeds import resolve_shapes, synthetic_feeds
from edgeport.runtime.io import atomic_write_bytes, write_report
from edgeport.runtime.reference import npz_bytes
from edgeport.runtime.tools.formatting import fmt_fixed, fmt_ratio, markdown_table

log = logging.getLogger(__name__)

SCHEMA = "edgeport.coldstart"
SCHEMA_VERSION = 1
AUTO = "auto"
BARE_ORT = "bare-onnxruntime"
BARE_OPENVINO = "bare-openvino"


def _onnx_on_cpu(specs: tuple[BackendSpec, ...]) -> list[BackendSpec]:
    return [s for s in specs if s.device == "cpu" and s.runs("onnx")]


# auto and every CPU backend of ONNX files, then the bare engines they are measured against
SUBJECTS = BackendNames(with_auto=True, order=_onnx_on_cpu, extra=(BARE_ORT, BARE_OPENVINO))
STATES = ("cold", "warm")
GOAL_RATIO = 1.3  # the goal: auto's whole process against bare ONNX Runtime's
MARK = "EDGEPORT-COLDSTART "
PARTS = ("startup_s", "import_s", "load_s", "inputs_s", "first_result_s", "exit_s")

# The child: timestamps on CLOCK_MONOTONIC (shared by all processes); values are filled in as
# Python literals of plain str/int/None/dict made by the parent, never from user text as code.
_PROLOGUE = """\
import time
t0 = time.monotonic()
"""
_RSS = """\
def _rss(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource, sys
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
rss_load = _rss("VmRSS")
import numpy as np
with np.load({inputs!r}, allow_pickle=False) as data:
    feeds = {{name: data[name] for name in data.files}}
t4 = time.monotonic()
"""
_EPILOGUE = """\
t5 = time.monotonic()
import json
print({mark!r} + json.dumps({{"t0": t0, "t1": t1, "t2": t2, "t4": t4, "t5": t5,
    "rss_load": rss_load, "rss_peak": _rss("VmHWM"), "chosen": chosen}}), flush=True)
"""
_EDGEPORT = """\
import edgeport.runtime as ep
t1 = time.monotonic()
model = ep.load({path!r}, backend={backend!r}, precision={precision!r}, threads={threads!r})
t2 = time.monotonic()
{rss}out = model.infer(feeds)
target = model.artifact.name if model.artifact else model.path.name
chosen = [model.backend, model.precision, target]
"""
_BARE_ORT = """\
import onnxruntime as ort
t1 = time.monotonic()
options = ort.SessionOptions()
options.intra_op_num_threads = {threads!r} or 0
session = ort.InferenceSession({path!r}, options, providers=["CPUExecutionProvider"])
t2 = time.monotonic()
{rss}out = session.run(None, feeds)
chosen = None
"""
_BARE_OPENVINO = """\
import openvino as ov
t1 = time.monotonic()
core = ov.Core()
core.set_property({{"CACHE_DIR": {cache!r}}})
compiled = core.compile_model({path!r}, "CPU", {config!r})
t2 = time.monotonic()
{rss}out = compiled.create_infer_request().infer(feeds)
chosen = None
"""


def _shown_path(path: str) -> str:
    """``path`` relative to the current directory when it lies inside it, so a result saved in
    a project names no folder of the machine it ran on."""
    here = Path.cwd()
    resolved = Path(path).absolute()
    return resolved.relative_to(here).as_posix() if resolved.is_relative_to(here) else path


@dataclass(frozen=True)
class ColdStartSettings:
    """``subjects``: () = auto, every edgeport CPU backend that can run the file here, bare ONNX
    Runtime and bare OpenVINO (when installed). ``precision``: None = the artifact auto
    chooses here."""

    runs: int = 5
    subjects: tuple[str, ...] = ()
    threads: int | None = None
    precision: str | None = None
    python: str = sys.executable
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "subjects", tuple(self.subjects))
        unknown = [s for s in self.subjects if s not in SUBJECTS]
        problems = [f"unknown subjects {unknown}; choose from {list(SUBJECTS)}"] if unknown else []
        if self.runs < 1:
            problems.append(f"runs must be >= 1, got {self.runs}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        if not self.timeout_s > 0:
            problems.append(f"timeout_s must be > 0, got {self.timeout_s}")
        if problems:
            raise ConfigError("invalid cold-start settings: " + "; ".join(problems))


@dataclass(frozen=True)
class Process:
    """One child process: its parts (seconds), total from the parent, memory (MiB), and what
    edgeport chose in it (backend, precision, artifact)."""

    subject: str
    state: str
    total_s: float
    cpu_s: float | None = None  # user + system CPU of the whole process, all its threads
    parts: dict[str, float] = field(default_factory=dict)
    rss_after_load_mib: float | None = None
    peak_rss_mib: float | None = None
    chosen: tuple[str, ...] | None = None
    error: str | None = None


@dataclass(frozen=True)
class ColdStartRow:
    """The median of one subject's processes in one state."""

    subject: str
    state: str
    runs: int
    total_s: float
    total_min_s: float
    total_max_s: float
    cpu_s: float | None
    parts: dict[str, float]
    rss_after_load_mib: float | None
    peak_rss_mib: float | None
    chosen: tuple[str, ...] | None
    vs_bare_onnxruntime: float | None = None
    vs_bare_engine: float | None = None  # against the bare library of the engine it ran on
    failed: int = 0

    @property
    def engine(self) -> str | None:
        """The engine that ran: the subject's, or the one auto chose."""
        if self.subject == AUTO:
            return self.chosen[0] if self.chosen else None
        return {BARE_ORT: "onnxruntime-cpu", BARE_OPENVINO: "openvino"}.get(
            self.subject, self.subject
        )


@dataclass
class ColdStartResult:
    model: str
    file: str
    precision: str
    settings: ColdStartSettings
    rows: list[ColdStartRow]
    processes: list[Process]
    environment: dict[str, Any]
    created: str
    notes: list[str] = field(default_factory=list)

    def find(self, subject: str, state: str) -> ColdStartRow | None:
        return next((r for r in self.rows if (r.subject, r.state) == (subject, state)), None)

    def goal(self, state: str = "warm") -> float | None:
        """auto's whole process / bare ONNX Runtime's, in ``state`` (the goal: <= 1.3)."""
        row = self.find(AUTO, state)
        return row.vs_bare_onnxruntime if row else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "model": self.model,
            "file": self.file,
            "precision": self.precision,
            "settings": {
                **asdict(self.settings),
                "subjects": list(self.settings.subjects),
                "python": _shown_path(self.settings.python),
            },
            "goal": {
                "what": "auto's whole process / bare ONNX Runtime's on the same file",
                "target": GOAL_RATIO,
                "cold": self.goal("cold"),
                "warm": self.goal("warm"),
            },
            "rows": [asdict(r) for r in self.rows],
            "processes": [asdict(p) for p in self.processes],
            "environment": self.environment,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# What runs


@dataclass(frozen=True)
class _Target:
    """The model as the children see it: the bundle or file edgeport loads, the ONNX file the
    bare libraries load, the precision every subject runs, and the one sample they run."""

    source: Path
    file: Path
    precision: str
    tuning_record: Path | None
    ov_config: dict[str, Any]


def _resolve(source: Path, settings: ColdStartSettings, inputs: Path) -> _Target:
    """Open the model once here (auto, or the precision asked for) to learn the file every
    subject runs, and write one synthetic sample of its inputs."""
    from edgeport.runtime.backends.openvino import OpenVinoSettings
    from edgeport.runtime.bundle import artifact_path
    from edgeport.runtime.loader import load
    from edgeport.runtime.tuning_records import cache_path, effective_settings, find_record

    with load(source, precision=settings.precision, threads=settings.threads) as model:
        file = artifact_path(source, model.artifact) if model.artifact else model.path
        if file.suffix.lower() != ".onnx":
            raise InputError(
                f"cold start compares edgeport with bare ONNX Runtime and OpenVINO on one ONNX "
                f"file; {source} opens {file.name} ({model.backend}): give --precision of "
                "an ONNX artifact"
            )
        feeds = synthetic_feeds(model.inputs, _one_sample(model.inputs))
        precision = model.precision
    atomic_write_bytes(inputs, npz_bytes(feeds))
    record = None
    if source.is_dir() and settings.precision is None:
        found, _ = find_record(source, effective_settings(settings.threads))
        cached = cache_path(found.manifest_sha256) if found else None
        record = cached if cached is not None and cached.is_file() else None
    config = OpenVinoSettings(threads=settings.threads).config()
    return _Target(source, file, precision, record, config)


def _one_sample(specs: Sequence[Any]) -> dict[str, tuple[int, ...]]:
    shapes = resolve_shapes(specs)
    first = specs[0]
    if first.rank and first.name in shapes:
        shapes[first.name] = (1, *shapes[first.name][1:])
    return resolve_shapes(specs, {first.name: shapes[first.name]})


def child_code(
    subject: str, target: _Target, threads: int | None, cache: Path, inputs: Path
) -> str:
    """The Python source a child process runs for ``subject``."""
    rss = _RSS.format(inputs=str(inputs))
    if subject == BARE_ORT:
        body = _BARE_ORT.format(path=str(target.file), threads=threads, rss=rss)
    elif subject == BARE_OPENVINO:
        body = _BARE_OPENVINO.format(
            path=str(target.file), cache=str(cache / "openvino"), config=target.ov_config, rss=rss
        )
    else:
        body = _EDGEPORT.format(
            path=str(target.source),
            backend=subject,
            precision=None if subject == AUTO else target.precision,
            threads=threads,
            rss=rss,
        )
    return _PROLOGUE + body + _EPILOGUE.format(mark=MARK)


def available_subjects(settings: ColdStartSettings) -> tuple[list[str], list[str]]:
    """The subjects to run, and why the others are left out."""
    import importlib.util

    from edgeport.runtime.backends.registry import backend_unavailable_reason

    wanted = settings.subjects or SUBJECTS
    chosen, left_out = [], []
    for subject in wanted:
        if subject in (BARE_ORT, BARE_OPENVINO):
            module = "onnxruntime" if subject == BARE_ORT else "openvino"
            why = None if importlib.util.find_spec(module) else f"{module} is not installed"
        else:
            why = None if subject == AUTO else backend_unavailable_reason(subject)
        if why:
            left_out.append(f"{subject}: {why}")
        else:
            chosen.append(subject)
    return chosen, left_out


# --------------------------------------------------------------------------------------------
# Running the processes


def _parse(stdout: str) -> dict[str, Any]:
    import json

    found: dict[str, Any] = {}
    for line in stdout.splitlines():
        if line.startswith(MARK):
            found.update(json.loads(line[len(MARK) :]))
    return found


def _children_cpu() -> float:
    """User + system CPU seconds of this process's finished children (they run one by one)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wait_exit(child: subprocess.Popen[bytes], timeout_s: float) -> float | None:
    """The monotonic time at which ``child`` exited, or None when it ran past ``timeout_s`` (then
    it is killed). A blocking wait returns at the exit itself: ``Popen.wait(timeout)`` polls
    with sleeps of up to 50 ms, which would add up to 50 ms to every process."""
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        child.kill()

    timer = threading.Timer(timeout_s, kill)
    timer.start()
    try:
        child.wait()
    finally:
        timer.cancel()
    end = time.monotonic()
    return None if expired.is_set() else end


def run_process(
    subject: str, state: str, code: str, cache: Path, settings: ColdStartSettings
) -> Process:
    """Spawn one child on ``cache`` as its EDGEPORT_CACHE_DIR and time it from spawn to exit."""
    env = {**os.environ, "EDGEPORT_CACHE_DIR": str(cache)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        cpu_before = _children_cpu()
        start = time.monotonic()
        child = subprocess.Popen([settings.python, "-c", code], env=env, stdout=out, stderr=err)
        end = _wait_exit(child, settings.timeout_s)
        if end is None:
            return Process(subject, state, settings.timeout_s, error="timed out")
        cpu = _children_cpu() - cpu_before
        out.seek(0)
        err.seek(0)
        found, stderr = _parse(out.read()), err.read()
    if child.returncode != 0 or "t5" not in found:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return Process(subject, state, end - start, error=f"exit {child.returncode}: {tail}")
    stamps = [start, *(found[k] for k in ("t0", "t1", "t2", "t4", "t5"))]  # t2-t4: RSS, inputs
    parts = dict(zip(PARTS[:-1], np.diff(stamps).tolist(), strict=True))
    parts["exit_s"] = end - found["t5"]
    mib = 1 / (1 << 20)
    chosen = found.get("chosen")
    return Process(
        subject,
        state,
        end - start,
        cpu,
        parts,
        found["rss_load"] * mib,
        found["rss_peak"] * mib,
        tuple(map(str, chosen)) if chosen else None,
    )


def _fresh_cache(root: Path, name: str, record: Path | None) -> Path:
    """An empty cache directory, holding only the tuning record auto follows."""
    cache = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    if record is not None:
        (cache / "tuning").mkdir()
        shutil.copy2(record, cache / "tuning" / record.name)
    return cache


def _median_row(subject: str, state: str, procs: Sequence[Process]) -> ColdStartRow | None:
    ok = [p for p in procs if p.error is None]
    if not ok:
        return None
    totals = [p.total_s for p in ok]
    cpu = [p.cpu_s for p in ok if p.cpu_s is not None]
    rss = [p.rss_after_load_mib for p in ok if p.rss_after_load_mib is not None]
    peak = [p.peak_rss_mib for p in ok if p.peak_rss_mib is not None]
    return ColdStartRow(
        subject=subject,
        state=state,
        runs=len(ok),
        total_s=statistics.median(totals),
        total_min_s=min(totals),
        total_max_s=max(totals),
        cpu_s=statistics.median(cpu) if cpu else None,
        parts={k: statistics.median(p.parts[k] for p in ok) for k in PARTS},
        rss_after_load_mib=statistics.median(rss) if rss else None,
        peak_rss_mib=statistics.median(peak) if peak else None,
        chosen=ok[-1].chosen,
        failed=len(procs) - len(ok),
    )


def _rows(subjects: Sequence[str], procs: Sequence[Process]) -> list[ColdStartRow]:
    """The median rows, state by state, each with its ratio to bare ONNX Runtime's total and
    to the bare library of the engine it ran on."""
    rows = []
    for state in STATES:
        found = [
            _median_row(s, state, [p for p in procs if (p.subject, p.state) == (s, state)])
            for s in subjects
        ]
        medians = [r for r in found if r is not None]
        bare = {r.engine: r.total_s for r in medians if r.subject in (BARE_ORT, BARE_OPENVINO)}
        for row in medians:
            ort, engine = bare.get("onnxruntime-cpu"), bare.get(row.engine)
            rows.append(
                replace(
                    row,
                    vs_bare_onnxruntime=row.total_s / ort if ort else None,
                    vs_bare_engine=row.total_s / engine if engine else None,
                )
            )
    return rows


def _bytecode_notes() -> list[str]:
    """Say so when edgeport's modules have no compiled bytecode: then every process compiles
    them from source (PYTHONDONTWRITEBYTECODE, a read-only checkout), which an installed wheel
    never does."""
    import importlib.util

    spec = importlib.util.find_spec("edgeport.runtime.model")
    if spec is None or spec.cached is None or Path(spec.cached).is_file():
        return []
    where = Path(spec.origin or "").parent.parent
    return [
        f"edgeport's modules in {where} have no compiled bytecode (__pycache__), so every "
        "process compiled them from source, as an installed wheel never does: run "
        f"`python -m compileall -q {where}` first for the numbers of an install"
    ]


def cold_start(
    source: str | Path,
    settings: ColdStartSettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ColdStartResult:
    """Measure every subject ``settings.runs`` times, cold and warm, interleaved."""
    from edgeport.runtime.envinfo import collect_environment

    settings = settings or ColdStartSettings()
    say = progress or (lambda message: log.info("%s", message))
    subjects, left_out = available_subjects(settings)
    with tempfile.TemporaryDirectory(prefix="edgeport-coldstart-") as tmp:
        root = Path(tmp)
        target = _resolve(Path(source), settings, root / "inputs.npz")
        procs: list[Process] = []
        for i in range(settings.runs):
            order = subjects[i % len(subjects) :] + subjects[: i % len(subjects)]
            for subject in order:
                cache = _fresh_cache(root, subject, target.tuning_record)
                code = child_code(subject, target, settings.threads, cache, root / "inputs.npz")
                for state in STATES:
                    say(f"cold start {i + 1}/{settings.runs}: {subject} ({state})")
                    procs.append(run_process(subject, state, code, cache, settings))
    notes = [f"not run: {why}" for why in left_out] + _bytecode_notes()
    notes += [f"{p.subject} ({p.state}) failed: {p.error}" for p in procs if p.error]
    return ColdStartResult(
        model=str(source),
        file=str(target.file),
        precision=target.precision,
        settings=settings,
        rows=_rows(subjects, procs),
        processes=procs,
        environment=collect_environment(threads=settings.threads),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Reports


COLDSTART_COLUMNS = (
    "subject",
    "state",
    "runs",
    "total s (min-max)",
    "CPU s",
    "start-up",
    "import",
    "load",
    "inputs",
    "first result",
    "exit",
    "RSS after load MiB",
    "peak RSS MiB",
    "vs bare ORT",
    "vs bare engine",
)


def _s(value: float | None) -> str:
    return fmt_fixed(value, 3)


def coldstart_markdown(result: ColdStartResult, *, level: int = 2) -> str:
    """The rows as a table (seconds; medians of the runs), the goal's ratio and the notes."""
    env = result.environment
    cpu = env.get("cpu") or {}
    lines = [
        f"{'#' * level} Cold start: {Path(result.model).name} ({result.precision}, "
        f"{Path(result.file).name})",
        "",
        f"Whole fresh processes: `python -c`, import, load, one sample, exit; median of "
        f"{result.settings.runs} interleaved runs per row. cold = a new empty "
        f"EDGEPORT_CACHE_DIR, warm = the next process on it. Threads: "
        f"{result.settings.threads or 'default'}. CPU {cpu.get('model', '?')} "
        f"({cpu.get('usable', '?')} usable); load average {env.get('load_average')}. "
        f"Created {result.created}.",
        "",
    ]
    rows = []
    for r in result.rows:
        name = r.subject
        if r.subject == AUTO and r.chosen:
            name = f"auto ({r.chosen[0]} {r.chosen[1]})"
        total = f"{_s(r.total_s)} ({_s(r.total_min_s)}-{_s(r.total_max_s)})"
        rows.append(
            [
                name,
                r.state,
                str(r.runs),
                total,
                _s(r.cpu_s),
                *(_s(r.parts[k]) for k in PARTS),
                fmt_fixed(r.rss_after_load_mib, 0),
                fmt_fixed(r.peak_rss_mib, 0),
                fmt_ratio(r.vs_bare_onnxruntime),
                fmt_ratio(r.vs_bare_engine),
            ]
        )
    lines += markdown_table(COLDSTART_COLUMNS, rows)
    for state in STATES:
        ratio = result.goal(state)
        if ratio is not None:
            met = "met" if ratio <= GOAL_RATIO else "NOT met"
            lines.append(
                f"\nGoal ({state}): auto's whole process / bare ONNX Runtime's = {ratio:.2f}x "
                f"(target <= {GOAL_RATIO}x: {met})."
            )
    lines += [f"\n- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_coldstart(
    result: ColdStartResult,
    *,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
) -> list[Path]:
    return write_report(
        result.to_dict,
        lambda: coldstart_markdown(result),
        json_path=json_path,
        markdown_path=markdown_path,
    )
