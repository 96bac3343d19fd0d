"""``export_module``: any ``torch.nn.Module`` to a parity-checked bundle.

The module is exported as called on ``example_inputs``; every output is checked against the
module itself on the example, the ``parity_inputs`` and the ``calibration`` data (when given),
and those samples and the PyTorch outputs on them are stored in the bundle for ``edgeport
check`` on a device without torch.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeport.export.pipeline import ExportJob, run_pipeline
from edgeport.export.samples import (
    Batch,
    SampleSource,
    check_like,
    named,
    read_batches,
    stack,
)
from edgeport.export.settings import ExportSettings
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, ExportError, InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def export_module(
    module: torch.nn.Module,
    example_inputs: Any,
    out: str | Path,
    settings: ExportSettings | None = None,
    *,
    calibration: SampleSource | None = None,
    parity_inputs: SampleSource | None = None,
    source: Mapping[str, Any] | None = None,
    **options: Any,
) -> Manifest:
    """Export ``module`` to a bundle at ``out`` and return its manifest.

    ``example_inputs``: a tensor, a tuple of tensors (or arrays) in ``forward``'s order, or a
    dict by input name; axis 0 of each is the sample (batch) axis. ``settings`` (or its fields
    as keyword ``options``, e.g. ``precisions=("fp32", "int8")``,
    ``dynamic_shapes={"ids": {0: "batch", 1: "seq"}}``) says what to produce;
    ``calibration`` and ``parity_inputs`` are an ``.npz`` path (one array per input, samples
    first), a dict of arrays or an iterable of such dicts. int8 needs ``calibration``.
    ``source`` is recorded as ``manifest.export["source"]``.

    Raises ``ConfigError`` for bad settings or inputs, ``ExportError`` when a step fails and
    ``ParityError`` when an artifact misses its tolerance (unless ``allow_parity_failure``);
    ``out`` is then left as it was.
    """
    settings = (settings or ExportSettings()).with_options(options)
    names = input_names(module, example_inputs, settings.input_names)
    example = named(example_inputs, names, "example_inputs")
    calib = read_batches(calibration, names, "calibration") if calibration is not None else None
    extra = [] if parity_inputs is None else read_batches(parity_inputs, names, "parity_inputs")
    check_like(extra, example, "parity_inputs")
    check_like(calib or [], example, "calibration")
    parity, left_out = stack([example, *extra, *(calib or [])], settings.parity_limit)
    if left_out:
        log.info("%d samples (other shapes, or beyond the parity limit) are not stored", left_out)
    _check_image(settings, example)
    job = ExportJob(
        module=module,
        example=example,
        parity=parity,
        card=base_card(module, settings),
        calibration=calib,
        calibration_source=str(calibration) if isinstance(calibration, str | Path) else None,
        source=dict(source or {"kind": "module", "class": _qualname(module)}),
    )
    return run_pipeline(job, settings, out)


def input_names(module: Any, example: Any, given: Sequence[str] | None) -> tuple[str, ...]:
    """The given names, else a dict example's keys in ``forward``'s order, else ``forward``'s
    positional parameter names (``input_0``, ... when it takes ``*args``)."""
    params = _positional_params(module)
    if given is not None:
        return tuple(given)
    if isinstance(example, Mapping):
        keys = [str(k) for k in example]
        unknown = [k for k in keys if k not in params]
        if params and unknown:
            raise ConfigError(
                f"example_inputs names {unknown}, which {_qualname(module)}.forward does not "
                f"take (its parameters: {params}); name the inputs as forward's parameters or "
                "pass input_names= with a tuple example"
            )
        return tuple(sorted(keys, key=params.index)) if params else tuple(keys)
    size = len(example) if isinstance(example, list | tuple) else 1
    if len(params) >= size:
        return tuple(params[:size])
    return ("input",) if size == 1 else tuple(f"input_{i}" for i in range(size))


def _positional_params(module: Any) -> list[str]:
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


def _qualname(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_image(settings: ExportSettings, example: Batch) -> None:
    """The image input exists and is an NCHW batch of the declared channels and size."""
    image = settings.image
    if image is None:
        return
    name = image.input or next(iter(example))
    if name not in example:
        raise ConfigError(f"image input {name!r} is not one of the inputs {list(example)}")
    want = (image.channels, *image.size)
    shape = example[name].shape
    if example[name].ndim != 4 or tuple(shape[1:]) != want:
        raise ConfigError(
            f"the image input {name!r} has example shape {list(shape)}, the image settings "
            f"describe [N, {want[0]}, {want[1]}, {want[2]}]"
        )


def base_card(module: Any, settings: ExportSettings) -> ModelCard:
    """The model card of a module export, before the graph's inputs and outputs are known."""
    image = settings.image.card_fields() if settings.image else {}
    try:
        return ModelCard(
            architecture=settings.architecture or type(module).__name__,
            num_classes=len(settings.class_names),
            class_names=settings.class_names,
            task=settings.task,
            postprocess=dict(settings.postprocess),
            **image,
        )
    except InputError as exc:
        raise ConfigError(str(exc)) from exc


def load_factory(spec: str) -> tuple[torch.nn.Module, Any]:
    """Import ``pkg.module:factory`` (the current directory importable, as for ``python -m``)
    and call it; it returns a module, or ``(module, example_inputs)`` (else None is returned
    for the example). The user's code is trusted like any script they run."""
    from torch import nn

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.isidentifier():
        raise ConfigError(
            f"--module expects PKG.MODULE:FACTORY (a function returning the nn.Module), e.g. "
            f"mymodels:build, got {spec!r}"
        )
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        imported = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"cannot import {module_name!r} (--module {spec}): {exc}; run edgeport from the "
                "directory that holds it, or install it"
            ) from exc
        raise ExportError(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module: report what it raised
        raise ExportError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    factory = getattr(imported, attr, None)
    if not callable(factory):
        found = sorted(
            n for n, v in vars(imported).items() if callable(v) and not n.startswith("_")
        )
        raise ConfigError(
            f"{module_name!r} has no function {attr!r} (--module {spec}); it defines {found}"
        )
    try:
        result = factory()
    except Exception as exc:  # the user's factory: report what it raised
        raise ExportError(f"the factory {spec} raised {type(exc).__name__}: {exc}") from exc
    model, example = result if isinstance(result, tuple) and len(result) == 2 else (result, None)
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"the factory {spec} returned {type(result).__name__}; it must return a "
            "torch.nn.Module or (module, example_inputs)"
        )
    return model, example
