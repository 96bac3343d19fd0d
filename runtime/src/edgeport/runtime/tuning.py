"""Measured backend choice: which backend and artifact of a bundle is fastest on THIS machine.

``edgeport tune BUNDLE`` times every backend x precision that may run here (and whose export
parity passed) and writes a :class:`TuningRecord`: the winner per batch size, with every
number, this machine's fingerprint (CPU, cores, GPUs, driver) and the library versions. It is
saved in the user's cache (``$EDGEPORT_CACHE_DIR/tuning`` or ``~/.cache/edgeport/tuning``),
keyed by the bundle's manifest sha256, or inside the bundle (``tuning.json``) when asked.

``load(backend="auto")`` uses a record only when it was measured for the same bundle, on a
machine with the same fingerprint, with the same library versions and thread count; otherwise
it falls back to the fixed rule of :mod:`edgeport.runtime.backends.registry`, and
``Model.explain()`` says which and why.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.envinfo import cpu_counts, cpu_model, package_versions
from edgeport.runtime.errors import EdgeportError, InputError
from edgeport.runtime.io import atomic_write_json, cache_dir, read_regular_file, sha256_file
from edgeport.runtime.schema import decode, parse_json

TUNING_SCHEMA_VERSION = 1
BUNDLE_RECORD = "tuning.json"
ENGINE_PACKAGES = (
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "tensorrt",
    "tensorrt-rtx-cu13",
    "ai-edge-litert",
    "executorch",
)


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
    threads: int | None
    created: str
    batches: tuple[BatchWinner, ...]
    schema_version: int = TUNING_SCHEMA_VERSION

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
    return package_versions(ENGINE_PACKAGES)


def cache_path(manifest_sha256: str) -> Path:
    return cache_dir("tuning") / f"{manifest_sha256[:16]}.json"


def manifest_digest(bundle_dir: Path) -> str:
    return sha256_file(bundle_dir / "manifest.json")


def save_record(record: TuningRecord, bundle_dir: Path, *, in_bundle: bool = False) -> Path:
    path = bundle_dir / BUNDLE_RECORD if in_bundle else cache_path(record.manifest_sha256)
    return atomic_write_json(path, record.to_dict())


def read_record(path: Path) -> TuningRecord:
    data = parse_json(read_regular_file(path, what="tuning record", max_bytes=1 << 20), str(path))
    return decode(data, TuningRecord, f"tuning record {path}")


def find_record(bundle_dir: Path, threads: int | None) -> tuple[TuningRecord | None, str]:
    """The record that holds for this bundle on this machine, or None, and why (for explain)."""
    digest = manifest_digest(bundle_dir)
    paths = [p for p in (bundle_dir / BUNDLE_RECORD, cache_path(digest)) if p.exists()]
    if not paths:
        return None, "no tuning record (run `edgeport tune` to measure the choice here)"
    reasons = []
    for path in paths:
        try:
            record = read_record(path)
        except (EdgeportError, InputError) as exc:
            reasons.append(f"{path} is unreadable: {exc}")
            continue
        why = _mismatch(record, digest, threads)
        if why is None:
            return record, f"tuning record {path} (measured {record.created})"
        reasons.append(f"{path} does not hold here: {why}")
    return None, "; ".join(reasons)


def _mismatch(record: TuningRecord, digest: str, threads: int | None) -> str | None:
    if record.manifest_sha256 != digest:
        return "it was measured for another version of this bundle"
    if record.machine != machine_fingerprint():
        return f"it was measured on another machine ({record.machine.get('cpu')})"
    if record.versions != engine_versions():
        return f"library versions changed since ({record.versions} -> {engine_versions()})"
    if record.threads != threads:
        return f"it was measured with threads={record.threads}, this load asks {threads}"
    return None
