"""What a benchmark feeds its candidates.

- :class:`Workload`: one row's input shapes, from a shape set and/or a batch size.
- :class:`InputData`: seeded synthetic data of the model's dtypes, or real samples (the bundle's
  stored reference inputs, an ``.npz`` file, images preprocessed by the model card), tiled or cut
  along axis 0 to each row's batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edgeport.runtime.errors import ConfigError
from edgeport.runtime.feeds import InputData, Shapes, load_npz, resolve_shapes
from edgeport.runtime.reference import StoredReference
from edgeport.runtime.source import ModelSource
from edgeport.runtime.specs import TensorSpec

INPUT_KINDS = ("auto", "synthetic", "reference")  # or the path of an .npz file


@dataclass(frozen=True)
class Workload:
    """One row's input shapes: a shape set (any inputs; the rest from the data or the model)
    and/or a batch size (axis 0 of the first input and of every input with a dynamic axis 0)."""

    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    batch: int | None = None

    def resolve(
        self, specs: Sequence[TensorSpec], defaults: Mapping[str, tuple[int, ...]]
    ) -> Shapes:
        """Every input's concrete shape; ``defaults`` (the stored samples' shapes) fill in what
        the workload leaves open before the model's own dimensions do."""
        names = {s.name for s in specs}
        given = {k: tuple(v) for k, v in defaults.items() if k in names}
        given.update({k: tuple(v) for k, v in self.shapes.items()})
        if self.batch is not None:
            base = resolve_shapes(specs, given)
            for index, spec in enumerate(specs):
                if spec.rank and (index == 0 or not isinstance(spec.shape[0], int)):
                    given[spec.name] = (self.batch, *base[spec.name][1:])
        return resolve_shapes(specs, given)


# --------------------------------------------------------------------------------------------
# Inputs


def _image_data(model: ModelSource, images: Sequence[str | Path]) -> InputData:
    from edgeport.runtime.preprocess import image_files, preprocess

    card = model.card
    if card is None or not card.is_image_model:
        raise ConfigError(
            f"images need a model card that says how to preprocess them (a bundle, or an ONNX "
            f"file with edgeport.card metadata); {model.path} has none: give an .npz of inputs"
        )
    files = image_files(images)
    name = card.image_input_name or _first_input_name(model)
    if name is None:
        raise ConfigError(f"{model.path}: cannot tell which input takes the images")
    batch = preprocess(files, card)
    return InputData(f"{len(files)} images preprocessed by the model card", {name: batch})


def _first_input_name(model: ModelSource) -> str | None:
    """The first input the manifest, the model card or the ONNX file declares."""
    first = model.candidates[0]
    if first.artifact is not None:
        return first.artifact.inputs[0].name
    if model.card is not None and model.card.inputs:
        return model.card.inputs[0].name
    if model.summary is not None and model.summary.inputs:
        return model.summary.inputs[0].name
    return None


def input_data(
    model: ModelSource,
    reference: StoredReference | None,
    *,
    kind: str = "synthetic",
    images: Sequence[str | Path] = (),
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    seed: int = 0,
) -> InputData:
    """The inputs asked for: ``images`` when given, else by ``kind``: "synthetic" (seeded,
    within ``value_ranges``), "reference" (the bundle's stored inputs) or an ``.npz`` path."""
    if images:
        return _image_data(model, images)
    if kind == "synthetic":
        ranges = dict(value_ranges or {})
        text = ", ".join(f"{k} {lo:g}..{hi:g}" for k, (lo, hi) in ranges.items())
        return InputData(
            f"synthetic (seed {seed}; floats standard-normal, integers uniform in their value "
            f"range{'; ' + text if text else ''})",
            None,
            ranges,
            seed,
        )
    if kind == "reference":
        if reference is None:
            raise ConfigError(
                f"{model.path} stores no reference inputs (bundles exported by edgeport do); "
                "use synthetic inputs or an .npz file"
            )
        where = f", {reference.dataset}" if reference.dataset else ""
        return InputData(f"bundle reference inputs ({reference.count}{where})", reference.inputs)
    arrays = load_npz(kind)
    return InputData(f"{Path(kind).name} ({', '.join(arrays)})", arrays)
