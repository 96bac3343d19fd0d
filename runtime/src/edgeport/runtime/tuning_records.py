"""Measured backend choice: which backend and artifact of a bundle is fastest on THIS machine.

``edgeport tune BUNDLE`` times every backend x precision that may run here (and whose export
parity passed) and writes a :class:`TuningRecord`: the winner per batch size, with every
number, this machine's fingerprint (CPU, cores, GPUs, driver) and the library versions. It is
saved in the user's cache (``$EDGEPORT_CACHE_DIR/tuning`` or ``~/.cache/edgeport/tuning``),
keyed by the bundle's manifest sha256, or inside the bundle (``tuning.json``) when asked.

``load(backend="auto")`` uses a record only when it was measured for the same bundle, on a
machine with the same fingerprint, with the same library versions and the same effective
settings (:func:`effective_settings`: the threads actually used, whether given or left to the
default, CUDA graphs, OpenVINO's compile properties); otherwise it falls back to the fixed rule
of :mod:`edgeport.runtime.backends.registry`, and ``Model.explain()`` says which and why (naming
every setting that differs). Even a record that holds never makes ``auto`` run an artifact the
registry's rule refuses (a failed parity check, a file that does not match its sha256).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.envinfo import cpu_counts, cpu_model, engine_packages, package_versions
from edgeport.runtime.errors import EdgeportError, InputError, StorageError
from edgeport.runtime.io import (
    atomic_write_json,
    cache_dir,
    check_writable,
    read_regular_file,
    sha256_file,
)
from edgeport.runtime.schema import decode, parse_json

TUNING_SCHEMA_VERSION = 2  # 2: the effective settings (schema 1's threads may be null)
BUNDLE_RECORD = "tuning.json"


@dataclass(frozen=True)
class Timing:
    """One candidate's measured latency at one batch size."""

    backend: str
    precision: str
    artifact: str
    p50_ms: float
    p90_ms: float


@dataclass(frozen=True)
class BatchWinner:
    """The fastest candidate at ``batch`` and everything it was measured against."""

    batch: int
    winner: Timing
    timings: tuple[Timing, ...]


@dataclass(frozen=True)
class TuningRecord:
    manifest_sha256: str
    machine: dict[str, Any]
    versions: dict[str, str]
    threads: int | None  # the threads used (schema 1: as asked, None for the default)
    created: str
    batches: tuple[BatchWinner, ...]
    schema_version: int = TUNING_SCHEMA_VERSION
    settings: dict[str, Any] = field(default_factory=dict)  # effective_settings() measured with

    def effective(self) -> dict[str, Any]:
        """The effective settings it was measured with (a schema-1 record: its threads, the
        rest at their defaults)."""
        return self.settings or effective_settings(self.threads)

    def winner_for(self, batch: int) -> BatchWinner | None:
        """The entry for ``batch``, else the nearest measured batch size below it, else the
        smallest."""
        if not self.batches:
            return None
        below = [b for b in self.batches if b.batch <= batch]
        return (
            max(below, key=lambda b: b.batch) if below else min(self.batches, key=lambda b: b.batch)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine_fingerprint() -> dict[str, Any]:
    """What must be equal for a measurement to hold here: CPU model and cores, GPUs, driver."""
    gpus = probe_gpus()
    return {
        "cpu": cpu_model(),
        "cores": cpu_counts().get("usable"),
        "machine": platform.machine(),
        "gpus": [f"{d.name} ({d.compute_capability})" for d in gpus.devices],
        "driver": gpus.driver_version,
    }


def engine_versions() -> dict[str, str]:
    """The versions of the packages the backends run on: a record made with others is stale."""
    return package_versions(engine_packages())


def default_threads() -> int:
    """The threads ONNX Runtime and OpenVINO use when none are asked for: one per physical core
    among the CPUs this process may run on."""
    counts = cpu_counts()
    usable = counts["usable"] or 1
    logical = counts["logical"] or usable
    per_core = max(1, logical // (counts["physical"] or logical))  # hardware threads per core
    return max(1, usable // per_core)


def effective_settings(
    threads: int | None, cuda_graph: bool = False, backend_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What a measurement depends on, as a load resolves it: the number of threads used (given,
    or :func:`default_threads`), CUDA graphs, and the properties OpenVINO compiles with (its
    defaults filled in; the cache folder does not count). Equal settings spelled differently
    (``threads=None`` and the default number, a default hint given by name) are equal here."""
    from edgeport.runtime.backends.openvino import OpenVinoSettings

    options = {k: v for k, v in (backend_options or {}).items() if k != "cache_dir"}
    compile_config = OpenVinoSettings.from_options(None, {**options, "cache_dir": ""}).config()
    return {
        "threads": threads or default_threads(),
        "cuda_graph": bool(cuda_graph),
        "openvino": {k: str(v) for k, v in sorted(compile_config.items())},
    }


def cache_path(manifest_sha256: str) -> Path | None:
    """Where the user's cache keeps this bundle's record; None when this user has no cache."""
    root = cache_dir("tuning")
    return None if root is None else root / f"{manifest_sha256[:16]}.json"


def manifest_digest(bundle_dir: Path) -> str:
    return sha256_file(bundle_dir / "manifest.json")


def record_path(bundle_dir: Path, digest: str | None = None, *, in_bundle: bool = False) -> Path:
    """Where a record of this bundle (manifest sha256 ``digest``) is saved: in the bundle, or the
    user's cache (``StorageError`` when this user has none)."""
    if in_bundle:
        return bundle_dir / BUNDLE_RECORD
    path = cache_path(digest or manifest_digest(bundle_dir))
    if path is None:
        raise StorageError(
            "this user has no cache folder (no $HOME, $XDG_CACHE_HOME or $EDGEPORT_CACHE_DIR): "
            "set EDGEPORT_CACHE_DIR to a writable folder, or write the record into the bundle "
            "(edgeport tune --in-bundle)"
        )
    return path


def save_record(record: TuningRecord, bundle_dir: Path, *, in_bundle: bool = False) -> Path:
    """Write the record to the user's cache (or into the bundle); ``StorageError`` saying where
    else it can go when that place cannot be written."""
    path = record_path(bundle_dir, record.manifest_sha256, in_bundle=in_bundle)
    with _where_else(in_bundle):
        return atomic_write_json(path, record.to_dict())


def check_record_writable(bundle_dir: Path, *, in_bundle: bool = False) -> Path:
    """Where the record will be saved, after checking that it can be (before the timing)."""
    path = record_path(bundle_dir, in_bundle=in_bundle)
    with _where_else(in_bundle):
        check_writable(path)
    return path


@contextmanager
def _where_else(in_bundle: bool) -> Iterator[None]:
    """A ``StorageError`` while saving a record, with where else it can be saved."""
    try:
        yield
    except StorageError as exc:
        hint = (
            "copy the bundle somewhere writable"
            if in_bundle
            else "set EDGEPORT_CACHE_DIR to a writable folder, or write the record into the "
            "bundle (edgeport tune --in-bundle)"
        )
        raise StorageError(
            f"cannot save the tuning record: {exc}; or {hint}",
            errno=exc.errno,
            filename=exc.filename,
        ) from exc


def read_record(path: Path) -> TuningRecord:
    data = parse_json(read_regular_file(path, what="tuning record", max_bytes=1 << 20), str(path))
    return decode(data, TuningRecord, f"tuning record {path}")


def find_record(
    bundle_dir: Path, settings: Mapping[str, Any], digest: str | None = None
) -> tuple[TuningRecord | None, str]:
    """The record that holds for this bundle (whose manifest has sha256 ``digest``) on this
    machine with these effective ``settings``, or None, and why (for explain)."""
    digest = digest or manifest_digest(bundle_dir)
    reasons = []
    found = []
    for path in (bundle_dir / BUNDLE_RECORD, cache_path(digest)):
        try:
            if path is not None and path.is_file():
                found.append(path)
        except OSError as exc:  # a cache folder this user may not read
            reasons.append(f"{path} cannot be read: {exc.strerror or exc}")
    if not found and not reasons:
        return None, "no tuning record (run `edgeport tune` to measure the choice here)"
    for path in found:
        try:
            record = read_record(path)
        except (EdgeportError, InputError) as exc:
            reasons.append(f"{path} is unreadable: {exc}")
            continue
        why = _mismatch(record, digest, settings)
        if why is None:
            return record, f"tuning record {path} (measured {record.created})"
        reasons.append(f"{path} does not hold here: {why}")
    return None, "; ".join(reasons)


def _mismatch(record: TuningRecord, digest: str, settings: Mapping[str, Any]) -> str | None:
    if record.manifest_sha256 != digest:
        return "it was measured for another version of this bundle"
    if record.machine != machine_fingerprint():
        return f"it was measured on another machine ({record.machine.get('cpu')})"
    if record.versions != engine_versions():
        return f"library versions changed since ({record.versions} -> {engine_versions()})"
    measured = record.effective()
    differ = [
        f"{key} {measured.get(key)!r}, this load {settings.get(key)!r}"
        for key in sorted(set(measured) | set(settings))
        if measured.get(key) != settings.get(key)
    ]
    if differ:
        return "it was measured with other settings: " + "; ".join(differ)
    return None
