"""Checkpoints: ``weights.safetensors`` + JSON in a run directory. Never a pickle.

A run directory (RUN_DIR) holds:

- ``weights.safetensors``: the model's state dict (parameters and buffers, float32, CPU)
- ``card.json``: the model card (architecture and arguments, classes, input size, mean/std)
- ``metrics.json``: ``test_accuracy`` in [0, 1], per-class accuracy and the per-epoch ``history``
- ``config.json``: the resolved training configuration and library versions
- ``curves.png`` and ``predictions.png``: written by the training loop
- ``training_state.safetensors`` + ``training_state.json``: what ``--resume`` needs (optimizer
  state, epoch, RNG states)

Every file is written atomically, so a run killed midway leaves each file whole or absent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save
from torch import nn

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import InputError, ModelLoadError
from edgeport.runtime.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    open_regular,
    read_regular_file,
)
from edgeport.runtime.schema import decode, parse_json
from edgeport.train.models import build_model_from_card, state_dict_mismatch

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
CURVES_FILE = "curves.png"
PREDICTIONS_FILE = "predictions.png"
STATE_TENSORS_FILE = "training_state.safetensors"
STATE_JSON_FILE = "training_state.json"


@dataclass
class Checkpoint:
    """A trained model loaded from a run directory: eval mode, CPU, float32."""

    model: nn.Module
    card: ModelCard
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    run_dir: Path = Path()

    @property
    def dataset(self) -> str | None:
        """The dataset the model was trained on (``config["data"]``), when recorded."""
        value = self.config.get("data")
        return str(value) if value else None

    @property
    def data_root(self) -> str | None:
        value = self.config.get("data_root")
        return str(value) if value else None


def state_dict_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as standalone contiguous CPU tensors (safetensors refuses shared storage)."""
    return {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in model.state_dict().items()
    }


def save_weights(
    path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None
) -> Path:
    """Write the model's state dict to a safetensors file, atomically."""
    data = safetensors_save(
        state_dict_tensors(model), metadata={"format": "pt", **(metadata or {})}
    )
    return atomic_write_bytes(path, data)


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    card: ModelCard,
    *,
    metrics: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write weights, card, metrics and config into ``run_dir`` (created if needed).

    The weights go first and the card last but one, metrics last: a directory with a
    ``metrics.json`` holds a finished run.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_weights(run_dir / WEIGHTS_FILE, model, {"architecture": card.architecture})
    atomic_write_json(run_dir / CONFIG_FILE, config)
    atomic_write_text(run_dir / CARD_FILE, card.to_json() + "\n")
    atomic_write_json(run_dir / METRICS_FILE, metrics)
    log.debug("checkpoint written to %s", run_dir)
    return run_dir


def read_safetensors(path: str | Path, *, what: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file; missing or corrupt files raise ``ModelLoadError``."""
    path = Path(path)
    os.close(open_regular(path, what=f"{what} file"))  # exists, regular (no FIFO hang)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{what} file {path} is not a readable safetensors file (truncated or corrupt?): "
            f"{exc}; restore or re-create the file"
        ) from exc


def load_weights_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors state dict into ``model`` strictly, naming the file on any mismatch."""
    path = Path(path)
    state = read_safetensors(path)
    parts = state_dict_mismatch(model.state_dict(), state)
    if parts:
        raise ModelLoadError(
            f"weights file {path} does not match the {type(model).__name__} the card describes: "
            + "; ".join(parts)
            + " (is card.json from a different run?)"
        )
    model.load_state_dict(state, strict=True)
    return model


RUN_FILE_BYTES = 64 << 20


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
    """A JSON object from a run file; ``{}`` for a missing optional file."""
    if not path.exists() and not required:
        return {}
    raw = read_regular_file(path, what="run file", max_bytes=RUN_FILE_BYTES)
    try:
        data = parse_json(raw, str(path))
    except InputError as exc:
        raise ModelLoadError(f"{exc} (truncated or corrupt?)") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Rebuild the model of a run directory from ``card.json`` and ``weights.safetensors``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ModelLoadError(
            f"run directory not found: {run_dir} (expected the --out directory of `edgeport train`)"
        )
    card = ModelCard.load(run_dir / CARD_FILE)
    weights = run_dir / WEIGHTS_FILE
    if not weights.exists():
        raise ModelLoadError(
            f"weights file not found: {weights}"
            + (
                f" (the run has not finished; continue it with `edgeport train --resume {run_dir}`)"
                if (run_dir / STATE_JSON_FILE).is_file()
                else ""
            )
        )
    model = build_model_from_card(card)
    load_weights_into(model, weights)
    model = model.to(device="cpu", dtype=torch.float32).eval()
    return Checkpoint(
        model=model,
        card=card,
        metrics=_read_json(run_dir / METRICS_FILE, required=False),
        config=_read_json(run_dir / CONFIG_FILE, required=False),
        run_dir=run_dir,
    )


# --------------------------------------------------------------------------------------------
# Training state for --resume: tensors in safetensors, everything else in JSON.


def save_training_state(
    run_dir: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scalars: dict[str, Any],
    rng: dict[str, torch.Tensor],
) -> None:
    """Write what resuming needs after an epoch: model and optimizer tensors, RNG states (as
    uint8 tensors) and the JSON-able rest (epoch, history, optimizer hyper-parameters)."""
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": v for k, v in state_dict_tensors(model).items()
    }
    opt_state = optimizer.state_dict()
    opt_scalars: dict[str, dict[str, Any]] = {}
    for index, per_param in opt_state["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                opt_scalars.setdefault(str(index), {})[key] = value
    for name, value in rng.items():
        tensors[f"rng.{name}"] = value.detach().to("cpu").contiguous().clone()
    document = {
        **scalars,
        "optimizer_param_groups": opt_state["param_groups"],
        "optimizer_scalars": opt_scalars,
    }
    # Tensors first: the JSON names the epoch, so it must never point at older tensors.
    atomic_write_bytes(run_dir / STATE_TENSORS_FILE, safetensors_save(tensors))
    atomic_write_json(run_dir / STATE_JSON_FILE, document)


@dataclass
class TrainingState:
    """What ``load_training_state`` returns; the loop loads each part into its owner."""

    scalars: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng: dict[str, torch.Tensor]


@dataclass(frozen=True)
class _StateDocument:
    """The typed view of ``training_state.json`` (the loop's own scalars pass through)."""

    epoch: int
    history: list[dict[str, Any]]
    optimizer_param_groups: list[dict[str, Any]]
    optimizer_scalars: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epoch < 0 or not all(k.isdigit() for k in self.optimizer_scalars):
            raise InputError("epoch must be >= 0 and optimizer_scalars keyed by parameter index")


def load_training_state(run_dir: Path) -> TrainingState:
    """Read back what ``save_training_state`` wrote, in ``state_dict`` form."""
    document = _read_json(run_dir / STATE_JSON_FILE, required=True)
    try:
        decode(document, _StateDocument, str(run_dir / STATE_JSON_FILE), ignore_unknown=True)
    except InputError as exc:
        raise ModelLoadError(f"{exc}; the run cannot be resumed") from exc
    tensors = read_safetensors(run_dir / STATE_TENSORS_FILE, what="training state")
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            if not index.isdigit():
                raise ModelLoadError(f"training state tensor {key!r} has no parameter index")
            per_param.setdefault(int(index), {})[name] = value
    for index, values in document.get("optimizer_scalars", {}).items():
        per_param.setdefault(int(index), {}).update(values)
    try:
        optimizer_state = {"state": per_param, "param_groups": document["optimizer_param_groups"]}
    except KeyError as exc:
        raise ModelLoadError(f"{run_dir / STATE_JSON_FILE} lacks {exc.args[0]!r}") from exc
    scalars = {
        k: v
        for k, v in document.items()
        if k not in ("optimizer_param_groups", "optimizer_scalars")
    }
    return TrainingState(scalars, model_state, optimizer_state, rng)
