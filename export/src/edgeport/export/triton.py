"""A bundle's artifacts as a Triton Inference Server model repository.

``write_repository(bundle, repo)`` writes one Triton model per artifact::

    repo/<name>-onnx-fp32/config.pbtxt      platform onnxruntime_onnx
    repo/<name>-onnx-fp32/1/model.onnx
    repo/<name>-tensorrt-int8/config.pbtxt  platform tensorrt_plan
    repo/<name>-tensorrt-int8/1/model.plan

Each ``config.pbtxt`` declares the inputs and outputs with Triton's data types; when every input
and output shares a leading batch dimension, ``max_batch_size`` is the artifact's batch range
max and the dims leave it out (Triton adds it), with dynamic batching (preferred sizes from the
range) on; otherwise ``max_batch_size: 0`` and full dims. Dynamic dimensions are -1. Instance
groups: CPU instances for ONNX, one per GPU for engines. Only artifacts whose parity passed (or
was not run, as for engines built without a GPU) are written. Each model directory is staged
and renamed into place, so a repository is never left with half a model.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeport.runtime.bundle import Artifact, Manifest, artifact_path, leading_range
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.serve.model_config import TRITON_TYPES, to_pbtxt
from edgeport.runtime.serve.model_config import model_config as triton_config

log = logging.getLogger(__name__)
MODEL_FILES = {"onnx": "model.onnx", "tensorrt": "model.plan"}


@dataclass(frozen=True)
class TritonSettings:
    """``instances``: model instances per group; ``queue_delay_us``: how long dynamic batching
    waits to fill a batch; ``name``: the model name prefix (default: the bundle's folder)."""

    instances: int = 1
    queue_delay_us: int = 100
    name: str | None = None

    def __post_init__(self) -> None:
        if self.instances < 1 or self.queue_delay_us < 0:
            raise ConfigError(
                f"Triton instances must be >= 1 and the queue delay >= 0 us, got "
                f"{self.instances} and {self.queue_delay_us}"
            )


def model_config(name: str, art: Artifact, settings: TritonSettings) -> str:
    """The ``config.pbtxt`` of one artifact (Triton's ModelConfig in protobuf text format): the
    same configuration ``edgeport serve`` answers at ``/v2/models/NAME/config``."""
    batch = leading_range(art.inputs[0])
    config = triton_config(
        name,
        art.format,
        art.inputs,
        art.outputs,
        max_batch=batch.max,
        preferred_batches=(batch.opt, batch.max),
        queue_delay_us=settings.queue_delay_us,
        instances=settings.instances,
    )
    return to_pbtxt(config)


def write_repository(
    bundle_dir: str | Path, repo: str | Path, settings: TritonSettings | None = None
) -> list[Path]:
    """Write (or replace) one Triton model per usable artifact of the bundle; return their
    directories."""
    settings = settings or TritonSettings()
    bundle_dir, repo = Path(bundle_dir), Path(repo)
    manifest = Manifest.load(bundle_dir)
    prefix = settings.name or bundle_dir.resolve().name
    if repo.exists() and not repo.is_dir():
        raise ConfigError(f"--triton-repo {repo} exists and is not a directory")
    written = []
    for art in manifest.artifacts:
        if art.parity_passed is False:
            log.info("not in the Triton repository: %s failed its parity check", art.name)
            continue
        if art.format not in MODEL_FILES:
            log.info("not in the Triton repository: %s (%s files)", art.name, art.format)
            continue
        unsupported = [s.dtype for s in (*art.inputs, *art.outputs) if s.dtype not in TRITON_TYPES]
        if unsupported:
            raise ConfigError(f"{art.name}: Triton has no data type for {unsupported}")
        written.append(_write_model(bundle_dir, repo, f"{prefix}-{art.name}", art, settings))
    if not written:
        raise ConfigError(f"{bundle_dir} has no artifact that passed parity to serve with Triton")
    return written


def _write_model(
    bundle_dir: Path, repo: Path, name: str, art: Artifact, settings: TritonSettings
) -> Path:
    final = repo / name
    staging = repo / f".{name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "1").mkdir(parents=True)
    shutil.copyfile(artifact_path(bundle_dir, art), staging / "1" / MODEL_FILES[art.format])
    (staging / "config.pbtxt").write_text(model_config(name, art, settings), encoding="utf-8")
    if final.exists():
        old = repo / f".{name}.old-{os.getpid()}"
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)
    return final
