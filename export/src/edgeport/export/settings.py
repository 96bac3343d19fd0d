"""The settings of one export: what to produce and how to describe the model.

``ExportSettings`` is the one configuration record of every export (a training run, any
``torch.nn.Module``, a torchvision model). The CLI maps its flags onto it, ``export_module``
and ``export`` take its fields as keyword options, and the resolved settings are saved in
``manifest.export`` (:meth:`ExportSettings.to_dict`). Everything here is plain data: no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from edgeport.export.int8 import Int8Policy
from edgeport.export.onnx import check_opset
from edgeport.export.quantize import CalibrationConfig
from edgeport.runtime.bundle import FORMATS, PRECISIONS, BatchRange
from edgeport.runtime.card import INTERPOLATIONS, TASKS, ModelCard
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.feeds import parse_profiles

BATCH_DIM = "batch"
DEFAULT_BATCH = BatchRange(1, 8, 32)
MIN_WORKSPACE = 1 << 20


def _parse_names(
    value: str | Iterable[str], known: tuple[str, ...], what: str, example: str
) -> tuple[str, ...]:
    """``"a,b"`` or an iterable to a de-duplicated tuple of ``known`` names, in its order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ConfigError(
            f"unknown {what} {', '.join(map(repr, unknown)) if unknown else '(none given)'}; "
            f"choose from {', '.join(known)} (comma-separated, e.g. {example})"
        )
    return tuple(k for k in known if k in names)


def parse_precisions(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"fp32,int8"`` or an iterable to a de-duplicated tuple in canonical order."""
    return _parse_names(value, PRECISIONS, "precision", "fp32,int8")


# the engine families int8 has a recipe for (edgeport.export.int8.INT8_TARGETS), in its order
INT8_ENGINES = ("onnxruntime", "openvino", "tensorrt")


def parse_targets(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """``"onnxruntime,openvino"`` or an iterable to int8 targets in canonical order; None
    stays None (the default: every target that can be made here)."""
    if value is None:
        return None
    return _parse_names(value, INT8_ENGINES, "int8 target", "onnxruntime,openvino")


def parse_formats(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"onnx,litert"`` or an iterable to a de-duplicated tuple in canonical order."""
    return _parse_names(value, FORMATS, "format", "onnx,litert")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How raw images become an image input, recorded in the model card: pixels scaled to
    ``value_range``, resized to ``size`` (height, width), normalised with ``(x - mean) / std``
    and fed to ``input`` (default: the first input). ``mean``/``std`` default to 0 and 1."""

    size: tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    value_range: tuple[float, float] = (0.0, 1.0)
    interpolation: str = "bilinear"
    input: str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.channels not in (1, 3):
            raise ConfigError(f"image channels must be 1 or 3, got {self.channels!r}")
        if len(self.size) != 2 or min(int(v) for v in self.size) < 1:
            raise ConfigError(f"image size must be (height, width) >= 1, got {self.size!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {INTERPOLATIONS}")
        set_(self, "size", (int(self.size[0]), int(self.size[1])))
        for name, default in (("mean", 0.0), ("std", 1.0)):
            values = getattr(self, name)
            values = (default,) * self.channels if values is None else tuple(map(float, values))
            if len(values) != self.channels:
                raise ConfigError(f"image {name} needs {self.channels} values, got {values}")
            set_(self, name, values)
        set_(self, "value_range", tuple(float(v) for v in self.value_range))

    def card_fields(self) -> dict[str, Any]:
        """The model card's image fields."""
        return {
            "in_channels": self.channels,
            "input_size": self.size,
            "mean": self.mean,
            "std": self.std,
            "value_range": self.value_range,
            "interpolation": self.interpolation,
            "image_input": self.input,
        }

    @classmethod
    def from_card(cls, card: ModelCard) -> ImagePreprocessing | None:
        if not card.is_image_model or card.input_size is None or card.in_channels is None:
            return None
        return cls(
            card.input_size,
            card.in_channels,
            card.mean,
            card.std,
            card.value_range,
            card.interpolation,
            card.image_input,
        )


def _dim_name(dim: Any, where: str) -> str:
    """A dynamic dimension's name: a string, or the name of a ``torch.export.Dim``."""
    if isinstance(dim, str) and dim.strip():
        return dim.strip()
    name = getattr(dim, "__name__", None)
    if isinstance(name, str) and name and not isinstance(dim, str):
        return name
    raise ConfigError(
        f"dynamic_shapes {where}: expected a dimension name or torch.export.Dim('name'), got "
        f"{dim!r} (unnamed hints such as Dim.AUTO are not supported: name every dynamic axis)"
    )


def normalize_dynamic(value: Mapping[str, Any] | None) -> dict[str, dict[int, str]] | None:
    """``{input: {axis: Dim or name}}`` to ``{input: {axis: name}}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(
            "dynamic_shapes must map input names to {axis: dimension name}, e.g. "
            f"{{'ids': {{0: 'batch', 1: 'seq'}}}}, got {type(value).__name__}"
        )
    out: dict[str, dict[int, str]] = {}
    for name, axes in value.items():
        if not isinstance(axes, Mapping):
            raise ConfigError(f"dynamic_shapes[{name!r}] must map axes to names, got {axes!r}")
        try:
            out[str(name)] = {int(a): _dim_name(d, f"{name}[{a}]") for a, d in axes.items()}
        except ValueError as exc:
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"dynamic_shapes[{name!r}]: axes must be integers") from None
    return out


def _shape_text(shapes: Sequence[Sequence[int]]) -> str:
    return ":".join("x".join(str(int(d)) for d in shape) for shape in shapes)


def normalize_shapes(value: Mapping[str, Any] | None) -> dict[str, str]:
    """``{input: "MIN:OPT:MAX" or (min_shape, opt_shape, max_shape)}`` to checked texts."""
    out: dict[str, str] = {}
    for name, given in (value or {}).items():
        if isinstance(given, str):
            text = given
        elif isinstance(given, Sequence) and len(given) == 3:
            text = _shape_text(given)
        else:
            raise ConfigError(
                f"shapes[{name!r}] must be 'MIN:OPT:MAX' (e.g. '1x8:4x64:32x128') or three "
                f"shapes (min, opt, max), got {given!r}"
            )
        ranges = parse_profiles(f"{name}:{text}")[str(name)]
        out[str(name)] = _shape_text(tuple(zip(*ranges, strict=True)))
    return out


@dataclass(frozen=True)
class ExportSettings:
    """Every setting of an export. Names and dynamic axes default to the module's forward
    parameters and axis 0 of every input (one shared ``batch`` dimension in ``batch``'s
    range); ``shapes`` gives dynamic dimensions their (min, opt, max), which TensorRT engines
    need (for ``batch`` it overrides ``batch``). ``task``, ``class_names``, ``image`` and
    ``postprocess`` go into the card. int8 is made per engine family in ``int8_targets``
    (None: ONNX Runtime, OpenVINO where NNCF is installed, TensorRT with ``tensorrt``) and kept
    for one only when it is ``int8_min_speedup`` times faster than fp32 there and passes
    parity (see :mod:`edgeport.export.int8.decide`; ``keep_slow_int8`` keeps a slow one)."""

    precisions: tuple[str, ...] = ("fp32",)
    formats: tuple[str, ...] = ("onnx",)  # FORMATS; "tensorrt" here is tensorrt=True
    input_names: tuple[str, ...] | None = None
    output_names: tuple[str, ...] | None = None
    dynamic_shapes: Mapping[str, Mapping[int, str]] | None = None
    batch: BatchRange = DEFAULT_BATCH
    shapes: Mapping[str, str] = field(default_factory=dict)
    value_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    task: str = "other"
    class_names: tuple[str, ...] = ()
    image: ImagePreprocessing | None = None
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    architecture: str | None = None
    calib: CalibrationConfig = CalibrationConfig()  # noqa: RUF009 - frozen dataclass
    parity_limit: int | None = None
    allow_parity_failure: bool = False
    opset: int | None = None
    tensorrt: bool = False
    tensorrt_flavour: str | None = None
    workspace_bytes: int = 1 << 30
    int8_targets: tuple[str, ...] | None = None
    int8_min_speedup: float = 1.1
    keep_slow_int8: bool = False
    int8_fallback_rounds: int = 3
    int8_timing_s: float = 2.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "precisions", parse_precisions(self.precisions))
        set_(self, "int8_targets", parse_targets(self.int8_targets))
        formats = parse_formats(self.formats)
        if self.tensorrt and "tensorrt" not in formats:
            formats = parse_formats((*formats, "tensorrt"))
        set_(self, "formats", formats)
        set_(self, "tensorrt", "tensorrt" in formats)
        for key in ("input_names", "output_names"):
            names = getattr(self, key)
            if names is not None:
                names = (names,) if isinstance(names, str) else tuple(str(n) for n in names)
                if len(set(names)) != len(names) or not all(names):
                    raise ConfigError(f"{key} must be distinct non-empty names, got {names}")
                set_(self, key, names)
        set_(self, "dynamic_shapes", normalize_dynamic(self.dynamic_shapes))
        if isinstance(self.batch, str):
            set_(self, "batch", BatchRange.parse(self.batch))
        set_(self, "shapes", normalize_shapes(self.shapes))
        set_(self, "value_ranges", _value_ranges(self.value_ranges))
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        set_(self, "postprocess", dict(self.postprocess))
        set_(self, "opset", check_opset(self.opset))
        self._check()

    def _check(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "classification" and not self.class_names:
            raise ConfigError("a classification export needs class_names (--class-names a,b,...)")
        if not isinstance(self.batch, BatchRange):
            raise ConfigError(f"batch must be a BatchRange or 'MIN:OPT:MAX', got {self.batch!r}")
        if not isinstance(self.calib, CalibrationConfig):
            raise ConfigError(f"calib must be a CalibrationConfig, got {type(self.calib).__name__}")
        limit = self.parity_limit
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"parity limit must be a positive number of samples, got {limit!r}")
        if self.workspace_bytes < MIN_WORKSPACE:
            raise ConfigError(
                f"TensorRT workspace must be at least 1 MiB, got {self.workspace_bytes} bytes"
            )
        if self.image is not None and not isinstance(self.image, ImagePreprocessing):
            raise ConfigError(f"image must be an ImagePreprocessing, got {self.image!r}")
        targets = self.int8_targets
        if self.tensorrt and "int8" in self.precisions and targets and "tensorrt" not in targets:
            raise ConfigError(
                "a TensorRT int8 engine is built from the tensorrt int8 file: add tensorrt "
                f"to --int8-targets (now {','.join(targets)})"
            )
        self.int8_policy()  # validates the int8 numbers

    def int8_policy(self) -> Int8Policy:
        """When an int8 file is kept (:class:`~edgeport.export.int8.Int8Policy`)."""
        return Int8Policy(
            min_speedup=self.int8_min_speedup,
            fallback_rounds=self.int8_fallback_rounds,
            keep_slow=self.keep_slow_int8,
            timing_s=self.int8_timing_s,
        )

    def with_options(self, options: Mapping[str, Any]) -> ExportSettings:
        """A copy with ``options`` (field names) replaced; an unknown name raises."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(f"unknown export settings {unknown}; known: {sorted(known)}")
        return replace(self, **options) if options else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``manifest.export``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _value_ranges(value: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    out = {}
    for name, bounds in dict(value).items():
        try:
            low, high = (float(v) for v in bounds)
        except (TypeError, ValueError):
            raise ConfigError(
                f"value_ranges[{name!r}] must be (low, high), got {bounds!r}"
            ) from None
        if not low <= high:
            raise ConfigError(f"value_ranges[{name!r}] needs low <= high, got {bounds!r}")
        out[str(name)] = (low, high)
    return out


def _plain(value: Any) -> Any:
    """A settings value as JSON data: ranges as text, records as objects, tuples as lists."""
    if isinstance(value, BatchRange):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
