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
from edgeport.runtime.specs import TensorSpec

log = logging.getLogger(__name__)

TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
}
PLATFORMS = {
    "onnx": ("onnxruntime_onnx", "model.onnx"),
    "tensorrt": ("tensorrt_plan", "model.plan"),
}


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


def _batched(art: Artifact) -> bool:
    """Whether every input and output starts with one shared dynamic (batch) dimension."""
    heads = {spec.shape[0] if spec.rank else 0 for spec in (*art.inputs, *art.outputs)}
    return len(heads) == 1 and isinstance(next(iter(heads)), str)


def _tensor(spec: TensorSpec, batched: bool) -> str:
    dims = [d if isinstance(d, int) else -1 for d in spec.shape[1 if batched else 0 :]]
    return (
        f'  {{ name: "{spec.name}" data_type: {TRITON_TYPES[spec.dtype]} '
        f"dims: [ {', '.join(str(d) for d in dims)} ] }}"
    )


def model_config(name: str, art: Artifact, settings: TritonSettings) -> str:
    """The ``config.pbtxt`` of one artifact (Triton's ModelConfig in protobuf text format)."""
    platform, _ = PLATFORMS[art.format]
    batched = _batched(art)
    lines = [f'name: "{name}"', f'platform: "{platform}"']
    batch = leading_range(art.inputs[0])
    lines.append(f"max_batch_size: {batch.max if batched else 0}")
    lines.append("input [\n" + ",\n".join(_tensor(s, batched) for s in art.inputs) + "\n]")
    lines.append("output [\n" + ",\n".join(_tensor(s, batched) for s in art.outputs) + "\n]")
    if batched:
        sizes = sorted({s for s in (batch.opt, batch.max) if s > 1})
        preferred = f"preferred_batch_size: [ {', '.join(map(str, sizes))} ] " if sizes else ""
        lines.append(
            f"dynamic_batching {{ {preferred}max_queue_delay_microseconds: "
            f"{settings.queue_delay_us} }}"
        )
    kind = "KIND_GPU" if art.format == "tensorrt" else "KIND_CPU"
    lines.append(f"instance_group [ {{ count: {settings.instances} kind: {kind} }} ]")
    return "\n".join(lines) + "\n"


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
        if art.format not in PLATFORMS:
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
    shutil.copyfile(artifact_path(bundle_dir, art), staging / "1" / PLATFORMS[art.format][1])
    (staging / "config.pbtxt").write_text(model_config(name, art, settings), encoding="utf-8")
    if final.exists():
        old = repo / f".{name}.old-{os.getpid()}"
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)
    return final
