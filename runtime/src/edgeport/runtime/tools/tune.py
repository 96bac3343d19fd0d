"""``edgeport tune``: time every backend x precision of a bundle that may run here and record the
fastest per batch size (:mod:`edgeport.runtime.tuning_records`), for ``load(backend="auto")``.

Candidates are what ``auto`` itself would consider: every backend that runs the artifact's
format on this machine (only those ``auto`` tries: ``BackendSpec.auto``), and an
artifact only when its export parity check passed (fp32 also when unchecked), so a tuned choice
is never one the parity gate refused. All are loaded at once and timed on the bundle's stored
reference inputs (else seeded synthetic ones) in interleaved rounds (each candidate in turn,
the order rotated per round; ``timing.duration_s`` per candidate shared by the rounds), so a
slow moment of a shared machine does not decide between them; the median (p50) decides.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from edgeport.runtime.backends.registry import (
    BACKENDS,
    ModelFile,
    backend_specs,
    candidate_unavailable_reason,
    runs_format,
    trust_refusal,
)
from edgeport.runtime.bundle import Artifact, Manifest
from edgeport.runtime.errors import ConfigError, EdgeportError
from edgeport.runtime.feeds import InputData, resolve_shapes
from edgeport.runtime.loader import load
from edgeport.runtime.model import Model
from edgeport.runtime.reference import load_reference
from edgeport.runtime.tools.timing import LatencyStats, TimingConfig, time_interleaved
from edgeport.runtime.tuning_records import (
    BatchWinner,
    Timing,
    TuningRecord,
    effective_settings,
    engine_versions,
    machine_fingerprint,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneSettings:
    batches: tuple[int, ...] = (1, 8)
    threads: int | None = None
    timing: TimingConfig = field(default_factory=lambda: TimingConfig(warmup_s=0.5, duration_s=2.0))
    backends: tuple[str, ...] = ()  # () = every one that can run here
    rounds: int = 5  # interleaved rounds sharing timing.duration_s per candidate

    def __post_init__(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise ConfigError(f"batch sizes must be integers >= 1, got {self.batches}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ConfigError(f"unknown backends {unknown}; choose from {list(BACKENDS)}")


def candidates(
    bundle_dir: Path, manifest: Manifest, settings: TuneSettings
) -> tuple[list[tuple[str, Artifact]], list[str]]:
    """(backend, artifact) pairs to time, and why the others are left out."""
    chosen, left_out = [], []
    backends = settings.backends or tuple(s.name for s in backend_specs() if s.auto)
    for art in manifest.artifacts:
        cand = ModelFile(
            art.format, art.precision, bundle_dir / art.path, art.name, art, art.engine, bundle_dir
        )
        refusal = trust_refusal(cand)
        for backend in (b for b in backends if runs_format(b, art.format)):
            why = refusal or candidate_unavailable_reason(backend, cand)
            if why:
                left_out.append(f"{backend} {art.name}: {why}")
            else:
                chosen.append((backend, art))
    return chosen, left_out


Opened = dict[tuple[str, str], tuple[Artifact, Model]]  # (backend, artifact name) -> both


def _open(
    bundle_dir: Path, pairs: Sequence[tuple[str, Artifact]], settings: TuneSettings
) -> tuple[Opened, list[str]]:
    """Every candidate loaded at once (so they can be timed in interleaved rounds), and why
    the ones that failed to load are left out."""
    models: Opened = {}
    left_out = []
    for backend, art in pairs:
        try:
            model = load(bundle_dir, backend=backend, threads=settings.threads, artifact=art.name)
        except EdgeportError as exc:
            left_out.append(f"{backend} {art.name}: {exc}")
            continue
        models[(backend, art.name)] = (art, model)
    return models, left_out


def _step(model: Model, data: InputData, batch: int) -> Callable[[], object]:
    first = model.inputs[0]
    rest = resolve_shapes([first])[first.name][1:]
    feeds = data.feeds(model.inputs, resolve_shapes(model.inputs, {first.name: (batch, *rest)}))
    return functools.partial(model.infer, feeds)


def _time_batch(
    models: Opened, data: InputData, batch: int, settings: TuneSettings
) -> list[Timing]:
    steps = {
        key: _step(model, data, batch)
        for key, (_, model) in models.items()
        if batch in model.batch_range
    }
    if not steps:
        return []
    samples = time_interleaved(steps, settings.timing, settings.rounds)
    timings = []
    for (backend, name), ms in samples.items():
        stats = LatencyStats.from_samples(ms)
        art = models[(backend, name)][0]
        timings.append(Timing(backend, art.precision, name, stats.p50, stats.p90))
    return timings


def tune(
    bundle_dir: str | Path,
    settings: TuneSettings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> tuple[TuningRecord, list[str]]:
    """Measure, and return the record (not yet saved) and what was left out and why."""
    settings = settings or TuneSettings()
    say = progress or (lambda message: log.info("%s", message))
    bundle_dir = Path(bundle_dir)
    manifest, digest = Manifest.read(bundle_dir)
    pairs, left_out = candidates(bundle_dir, manifest, settings)
    reference = load_reference(bundle_dir, manifest)
    data = (
        InputData("the bundle's reference inputs", reference.inputs)
        if reference
        else InputData("synthetic inputs")
    )
    models, failed = _open(bundle_dir, pairs, settings)
    left_out += failed
    measured: dict[int, list[Timing]] = {}
    names = ", ".join(f"{name} on {backend}" for backend, name in models)
    try:
        for batch in settings.batches:
            say(f"timing batch {batch} in {settings.rounds} interleaved rounds: {names}")
            measured[batch] = _time_batch(models, data, batch, settings)
    finally:
        for _, model in models.values():
            model.close()
    return _record(bundle_dir, digest, settings, measured), left_out


def _record(
    bundle_dir: Path, digest: str, settings: TuneSettings, measured: dict[int, list[Timing]]
) -> TuningRecord:
    entries = tuple(
        BatchWinner(
            batch,
            min(timings, key=lambda t: t.p50_ms),
            tuple(sorted(timings, key=lambda t: t.p50_ms)),
        )
        for batch, timings in sorted(measured.items())
        if timings
    )
    if not entries:
        raise ConfigError(f"nothing in {bundle_dir} could be timed on this machine")
    measured_with = effective_settings(settings.threads)
    return TuningRecord(
        manifest_sha256=digest,
        machine=machine_fingerprint(),
        versions=engine_versions(),
        threads=measured_with["threads"],
        settings=measured_with,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        batches=entries,
    )


def summary_lines(record: TuningRecord) -> Sequence[str]:
    lines = []
    for entry in record.batches:
        lines.append(f"batch {entry.batch}:")
        for t in entry.timings:
            mark = "  <- auto" if t == entry.winner else ""
            lines.append(
                f"  {t.backend:16s} {t.precision:5s} p50 {t.p50_ms:8.3f} ms  "
                f"p90 {t.p90_ms:8.3f} ms{mark}"
            )
    return lines
