"""edgeport-train: models, data, training loop and safetensors checkpoints.

The public names are imported lazily (``edgeport.train.train`` imports torch only when used):
``train``, ``TrainConfig``, ``evaluate``, ``build_model``, ``build_model_from_card``,
``available_models``, ``load_checkpoint``, ``save_checkpoint``, ``load_eval_arrays``,
``available_datasets``, ``summarize``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train": "edgeport.train.loop",
    "TrainConfig": "edgeport.train.loop",
    "evaluate": "edgeport.train.evaluate",
    "Evaluation": "edgeport.train.evaluate",
    "build_model": "edgeport.train.models",
    "build_model_from_card": "edgeport.train.models",
    "available_models": "edgeport.train.models",
    "default_input_size": "edgeport.train.models",
    "load_checkpoint": "edgeport.train.checkpoint",
    "save_checkpoint": "edgeport.train.checkpoint",
    "Checkpoint": "edgeport.train.checkpoint",
    "load_eval_arrays": "edgeport.train.data",
    "available_datasets": "edgeport.train.data",
    "EvalArrays": "edgeport.train.data",
    "summarize": "edgeport.train.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeport.train' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
