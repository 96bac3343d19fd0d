"""The model card: the typed record that travels with a model from training to the device.

It says how to rebuild the network (architecture and arguments), what task it does and what its
outputs mean (class names), what its inputs and outputs are, and, for an image model, how raw
images become the input tensor (size, channels, layout, scaling, mean/std).
Train writes it, export embeds it (ONNX ``metadata_props`` and the bundle manifest), and the
runtime reads it to preprocess images.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeport.runtime.errors import ConfigError, InputError, ModelLoadError
from edgeport.runtime.io import read_regular_file
from edgeport.runtime.schema import decode, parse_json
from edgeport.runtime.specs import TensorSpec

CARD_SCHEMA_VERSION = 2
MAX_CARD_BYTES = 16 << 20
MAX_IMAGE_SIDE = 8192  # the largest input height or width a card may declare
MAX_CLASSES = 1_000_000
ONNX_METADATA_KEY = "edgeport.card"
LAYOUTS = ("NCHW",)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
TASKS = ("classification", "detection", "segmentation", "other")
_IMAGE_FIELDS = ("in_channels", "input_size", "mean", "std")


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to use a model besides its weights.

    ``task`` says what the outputs mean: ``classification`` (the first output holds logits over
    ``class_names``), ``detection`` and ``segmentation`` (class names per box or pixel, with the
    settings of the task's post-processing in ``postprocess``) or ``other``. ``inputs`` and
    ``outputs`` describe the model's tensors (names, dtypes, symbolic shapes, declared value
    ranges); a card written before they existed has none, and the artifact then says.

    An image model also has ``in_channels``, ``input_size``, ``mean`` and ``std`` (all four or
    none): raw pixels are scaled to ``value_range`` (``(0.0, 1.0)``: uint8 / 255, as ToTensor
    does), then normalised per channel with ``(x - mean) / std``, and fed to ``image_input``
    (default: the first input).
    """

    architecture: str
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    in_channels: int | None = None
    input_size: tuple[int, int] | None = None  # (height, width)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    arch_args: dict[str, Any] = field(default_factory=dict)
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    interpolation: str = "bilinear"
    task: str = "classification"
    image_input: str | None = None
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    postprocess: dict[str, Any] = field(default_factory=dict)
    schema_version: int = CARD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise InputError("invalid model card: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        out = []
        if not self.architecture:
            out.append("architecture is empty")
        if self.task not in TASKS:
            out.append(f"task must be one of {TASKS}, got {self.task!r}")
        if self.num_classes < 0 or (self.task == "classification" and self.num_classes < 1):
            out.append(f"num_classes must be >= 1 for a classifier, got {self.num_classes}")
        if self.num_classes > MAX_CLASSES:
            out.append(f"num_classes must be at most {MAX_CLASSES:,}, got {self.num_classes:,}")
        if self.class_names and len(self.class_names) != self.num_classes:
            out.append(f"expected {self.num_classes} class names, got {len(self.class_names)}")
        if self.task == "classification" and not self.class_names:
            out.append("a classifier needs its class names")
        present = [name for name in _IMAGE_FIELDS if getattr(self, name) is not None]
        if present and len(present) != len(_IMAGE_FIELDS):
            missing = [name for name in _IMAGE_FIELDS if name not in present]
            out.append(f"an image model needs {list(_IMAGE_FIELDS)}; {missing} missing")
        elif present:
            out += self._image_problems()
        names = [s.name for s in self.inputs]
        if self.image_input is not None and self.inputs and self.image_input not in names:
            out.append(f"image_input {self.image_input!r} is not one of the inputs {names}")
        if self.image_input is not None and not present:
            out.append("image_input is set but the card has no image preprocessing")
        if self.layout not in LAYOUTS:
            out.append(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.interpolation not in INTERPOLATIONS:
            out.append(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.schema_version > CARD_SCHEMA_VERSION:
            out.append(
                f"card schema {self.schema_version} is newer than this edgeport reads "
                f"({CARD_SCHEMA_VERSION}); upgrade edgeport-runtime"
            )
        return out

    def _image_problems(self) -> list[str]:
        out = []
        channels, size = self.in_channels, self.input_size
        if channels not in (1, 3):
            out.append(f"in_channels must be 1 or 3, got {channels}")
        if size is None or len(size) != 2 or min(size) < 1 or max(size) > MAX_IMAGE_SIDE:
            out.append(
                f"input_size must be (height, width), each in 1..{MAX_IMAGE_SIDE}, got {size}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name) or ()
            if len(values) != channels:
                out.append(f"{name} needs {channels} values, got {len(values)}")
            if not all(math.isfinite(v) for v in values):
                out.append(f"{name} has a non-finite value: {values}")
        if any(v <= 0 for v in self.std or ()):
            out.append(f"std must be positive, got {self.std}")
        return out

    @property
    def is_image_model(self) -> bool:
        """Whether raw images can be preprocessed for this model (the card says how)."""
        return self.in_channels is not None

    @property
    def image_input_name(self) -> str | None:
        """The input that takes preprocessed images: ``image_input``, else the first input."""
        if not self.is_image_model:
            return None
        if self.image_input is not None:
            return self.image_input
        return self.inputs[0].name if self.inputs else None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one preprocessed image."""
        if self.in_channels is None or self.input_size is None:
            raise ConfigError(
                f"the model card of {self.architecture!r} describes no image input "
                "(in_channels, input_size, mean, std)"
            )
        return (self.in_channels, *self.input_size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("class_names", "input_size", "mean", "std", "value_range"):
            if data[key] is not None:
                data[key] = list(data[key])
        data["inputs"] = [s.to_dict() for s in self.inputs]
        data["outputs"] = [s.to_dict() for s in self.outputs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """A card from parsed JSON, every field type-checked (:mod:`edgeport.runtime.schema`)."""
        if not isinstance(data, dict):
            raise InputError(f"a model card must be a JSON object, got {type(data).__name__}")
        return decode(data, cls, "model card")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        return cls.from_dict(parse_json(text, "model card"))

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read ``card.json``; a missing or malformed file raises ``ModelLoadError`` naming it."""
        path = Path(path)
        data = read_regular_file(path, what="model card", max_bytes=MAX_CARD_BYTES)
        try:
            return cls.from_json(data.decode("utf-8"))
        except (InputError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"model card {path} is unreadable: {exc}") from exc
