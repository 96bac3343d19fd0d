"""The model card: the typed record that travels with a model from training to the device.

It says how to rebuild the network (architecture and arguments), what the outputs mean (class
names) and how raw images become the input tensor (size, channels, layout, scaling, mean/std).
Train writes it, export embeds it (ONNX ``metadata_props`` and the bundle manifest), and the
runtime reads it to preprocess images.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeport.runtime.errors import InputError, ModelLoadError

CARD_SCHEMA_VERSION = 1
ONNX_METADATA_KEY = "edgeport.card"
LAYOUTS = ("NCHW",)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to use a trained classifier besides its weights.

    Pixels are first scaled to ``value_range`` (``(0.0, 1.0)``: uint8 / 255, as ToTensor does),
    then normalised per channel with ``(x - mean) / std``.
    """

    architecture: str
    num_classes: int
    class_names: tuple[str, ...]
    in_channels: int
    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch_args: dict[str, Any] = field(default_factory=dict)
    layout: str = "NCHW"
    value_range: tuple[float, float] = (0.0, 1.0)
    interpolation: str = "bilinear"
    schema_version: int = CARD_SCHEMA_VERSION

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise InputError("invalid model card: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        out = []
        if not self.architecture:
            out.append("architecture is empty")
        if self.num_classes < 1:
            out.append(f"num_classes must be >= 1, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            out.append(f"expected {self.num_classes} class names, got {len(self.class_names)}")
        if self.in_channels not in (1, 3):
            out.append(f"in_channels must be 1 or 3, got {self.in_channels}")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            out.append(f"input_size must be (height, width) >= 1, got {self.input_size}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.in_channels:
                out.append(f"{name} needs {self.in_channels} values, got {len(values)}")
            if not all(math.isfinite(v) for v in values):
                out.append(f"{name} has a non-finite value: {values}")
        if any(v <= 0 for v in self.std):
            out.append(f"std must be positive, got {self.std}")
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

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one preprocessed image."""
        return (self.in_channels, *self.input_size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("class_names", "input_size", "mean", "std", "value_range"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        if not isinstance(data, dict):
            raise InputError(f"a model card must be a JSON object, got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"model card has unknown fields {unknown}; known: {sorted(known)}")
        try:
            return cls(
                **{
                    **data,
                    "class_names": tuple(str(c) for c in data["class_names"]),
                    "input_size": tuple(int(v) for v in data["input_size"]),
                    "mean": tuple(float(v) for v in data["mean"]),
                    "std": tuple(float(v) for v in data["std"]),
                    "value_range": tuple(float(v) for v in data.get("value_range", (0.0, 1.0))),
                    "arch_args": dict(data.get("arch_args", {})),
                }
            )
        except KeyError as exc:
            raise InputError(f"model card is missing field {exc.args[0]!r}") from exc
        except TypeError as exc:
            raise InputError(f"model card has a field of the wrong type: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"model card is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read ``card.json``; a missing or malformed file raises ``ModelLoadError`` naming it."""
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelLoadError(f"model card not found: {path}") from exc
        except (InputError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"model card {path} is unreadable: {exc}") from exc
