"""What the other edgeport distributions plug into the runtime, found through entry points.

The runtime never imports torch or the training code. edgeport-train and edgeport-export add
subcommands (``edgeport.commands``), dataset readers (``edgeport.datasets``) and PyTorch
baselines (``edgeport.baselines``); the runtime's tools look them up here, by name, and say why
when one is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

COMMAND_GROUP = "edgeport.commands"
DATASET_GROUP = "edgeport.datasets"
BASELINE_GROUP = "edgeport.baselines"
EAGER = "torch"  # the PyTorch eager baseline, also the reference of `edgeport check`
COMPILE = "torch-compile"


def available_baselines() -> dict[str, Any]:
    """Baseline classes from the ``edgeport.baselines`` entry points (edgeport-train)."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=BASELINE_GROUP):
        try:
            found[ep.name] = ep.load()
        except ImportError as exc:
            log.info("baseline %s cannot be imported: %s", ep.name, exc)
    return found


def torch_reference_class() -> tuple[Any | None, str | None]:
    """The ``torch`` baseline class, or None and why it is not available."""
    eps = [ep for ep in entry_points(group=BASELINE_GROUP) if ep.name == EAGER]
    if not eps:
        return None, f"edgeport-train is not installed (no {EAGER!r} baseline entry point)"
    try:
        cls = eps[0].load()
    except ImportError as exc:
        return None, f"the PyTorch baseline cannot be imported: {exc}"
    reason = cls.unavailable_reason()
    return (None, reason) if reason else (cls, None)


def dataset_loader() -> Callable[..., Any] | None:
    """``load_eval_arrays`` from the ``edgeport.datasets`` entry point ``arrays``, if installed."""
    for ep in entry_points(group=DATASET_GROUP):
        if ep.name == "arrays":
            try:
                return ep.load()
            except ImportError as exc:
                log.info("dataset loader unavailable: %s", exc)
    return None
