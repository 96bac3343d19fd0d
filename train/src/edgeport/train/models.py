"""The model registry: named, shape-aware image classifiers.

Every model is built from ``(num_classes, in_channels, input_size, **arch_args)``, so a card
rebuilds the same network anywhere. Registered names:

- ``simple_cnn``: the article's CNN (conv 3x3/32, ReLU, max pool 2, conv 3x3/64, ReLU, max pool 2,
  flatten, FC 128, ReLU, FC classes). Convolutions use padding 1, so each pool halves the side and
  the flatten size is ``64 * (H // 4) * (W // 4)`` for any input of at least 4x4.
- ``simple_cnn_dropout``: the same with dropout 0.5 before the last layer.
- ``simple_cnn_bn``: the same with BatchNorm after each convolution.
- ``resnet18``: torchvision's ResNet-18 with a new head (and a new first convolution when
  ``in_channels != 3``); ``weights=PATH`` loads ImageNet weights from a local file.
- ``torchvision:<name>``: any torchvision classification model, adapted the same way.

Nothing is ever downloaded: pretrained weights come only from a file the user names.
"""

from __future__ import annotations

import logging
import pickle  # only for its exception class: nothing here unpickles
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgeport.runtime.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:
    from edgeport.runtime.card import ModelCard

log = logging.getLogger(__name__)

TORCHVISION_PREFIX = "torchvision:"
# torchvision models whose auxiliary classifiers only matter for their original training recipe.
_AUX_LOGITS_MODELS = ("inception_v3", "googlenet")

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: how to build it and the input size it is designed for."""

    name: str
    factory: ModelFactory
    default_input_size: tuple[int, int]
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, default_input_size: tuple[int, int] = (32, 32), description: str = ""
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a factory ``f(*, num_classes, in_channels, input_size, **kw)``.

    Registering a name twice replaces the earlier entry with a warning (as timm's registry does),
    so a plugin can override a model on purpose but never by accident without a trace.
    """

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name.startswith(TORCHVISION_PREFIX):
            raise ConfigError(f"model names may not start with {TORCHVISION_PREFIX!r}: {name!r}")
        if name in _REGISTRY:
            warnings.warn(
                f"model {name!r} is registered twice; the later registration "
                f"({factory.__module__}.{factory.__qualname__}) replaces the earlier one",
                stacklevel=2,
            )
        _REGISTRY[name] = ModelSpec(name, factory, tuple(default_input_size), description)  # type: ignore[arg-type]
        return factory

    return decorate


def available_models(*, include_torchvision: bool = False) -> list[str]:
    """Registered model names (and ``torchvision:<name>`` for every torchvision classifier)."""
    names = sorted(_REGISTRY)
    if include_torchvision:
        names += [TORCHVISION_PREFIX + n for n in torchvision_model_names()]
    return names


def torchvision_model_names() -> list[str]:
    """Every classification model torchvision offers (not detection, segmentation, video)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _unknown_model(name: str) -> ConfigError:
    return ConfigError(
        f"unknown model {name!r}; available: {', '.join(available_models())}, or "
        f"'{TORCHVISION_PREFIX}NAME' for any torchvision classifier "
        f"(e.g. {TORCHVISION_PREFIX}mobilenet_v3_small; `edgeport summary --list` shows all)"
    )


def _torchvision_name(name: str) -> str:
    tv_name = name[len(TORCHVISION_PREFIX) :]
    valid = torchvision_model_names()
    if tv_name not in valid:
        raise ConfigError(
            f"unknown torchvision classification model {tv_name!r}; valid names: "
            + ", ".join(valid)
        )
    return tv_name


def default_input_size(name: str) -> tuple[int, int]:
    """The (height, width) a model is designed for: 32x32 for the small CNNs, 224x224 for
    ResNet-18, and for ``torchvision:<name>`` the crop size of its published weights."""
    if name.startswith(TORCHVISION_PREFIX):
        import torchvision

        tv_name = _torchvision_name(name)
        weights = torchvision.models.get_model_weights(tv_name).DEFAULT
        crop = weights.transforms().crop_size  # building the transform downloads nothing
        return (int(crop[0]), int(crop[-1]))
    spec = _REGISTRY.get(name)
    if spec is None:
        raise _unknown_model(name)
    return spec.default_input_size


def _validate_common(num_classes: int, in_channels: int, input_size: tuple[int, int]) -> None:
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    if len(input_size) != 2 or any(int(v) < 1 for v in input_size):
        raise ConfigError(f"input_size must be (height, width) >= 1, got {input_size!r}")


def build_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    input_size: tuple[int, int] = (32, 32),
    weights: str | Path | None = None,
    freeze_backbone: bool = False,
    **arch_args: Any,
) -> nn.Module:
    """Build a registered model (or ``torchvision:<name>``) for the given shape.

    ``weights`` (a local ``.safetensors`` or ``.pth`` file of ImageNet weights) and
    ``freeze_backbone`` (train only the head) are build options, not architecture: a model card
    records only ``arch_args``.
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    _validate_common(num_classes, in_channels, input_size)
    if name.startswith(TORCHVISION_PREFIX):
        model = _build_torchvision(
            _torchvision_name(name), num_classes, in_channels, input_size, weights, arch_args
        )
    else:
        spec = _REGISTRY.get(name)
        if spec is None:
            raise _unknown_model(name)
        if weights is not None and spec.name != "resnet18":
            raise ConfigError(
                f"--weights loads ImageNet weights into resnet18 or torchvision:<name>; "
                f"{name!r} has no pretrained weights (train it from scratch)"
            )
        kwargs = dict(arch_args)
        if weights is not None:
            kwargs["weights"] = weights
        try:
            model = spec.factory(
                num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kwargs
            )
        except TypeError as exc:
            raise ConfigError(f"bad arguments for model {name!r}: {exc}") from exc
    if freeze_backbone:
        freeze_all_but_head(model)
    return model


def build_model_from_card(card: ModelCard) -> nn.Module:
    """Rebuild the (untrained) network a model card describes, in eval mode."""
    model = build_model(
        card.architecture,
        num_classes=card.num_classes,
        in_channels=card.input_shape[0],
        input_size=card.input_shape[1:],
        **dict(card.arch_args),
    )
    return model.eval()


# --------------------------------------------------------------------------------------------
# The article's CNN


class SimpleCNN(nn.Module):
    """conv 3x3/32, ReLU, pool, conv 3x3/64, ReLU, pool, FC ``hidden``, ReLU, FC classes.

    ``features`` and ``classifier`` are separate so ``freeze_backbone`` can train only the head.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        input_size: tuple[int, int] = (32, 32),
        batch_norm: bool = False,
        dropout: float = 0.0,
        hidden: int = 128,
        channels: tuple[int, int] | list[int] = (32, 64),
    ) -> None:
        super().__init__()
        height, width = input_size
        if height < 4 or width < 4:
            raise ConfigError(
                f"the simple CNN pools twice by 2, so it needs an input of at least 4x4; "
                f"got {height}x{width} (use --input-size 32 or larger)"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        if hidden < 1 or len(channels) != 2 or min(channels) < 1:
            raise ConfigError(f"hidden and channels must be positive, got {hidden}, {channels}")
        c1, c2 = int(channels[0]), int(channels[1])
        layers: list[tuple[str, nn.Module]] = []
        for index, (cin, cout) in enumerate(((in_channels, c1), (c1, c2)), start=1):
            layers.append((f"conv{index}", nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm)))
            if batch_norm:
                layers.append((f"bn{index}", nn.BatchNorm2d(cout)))
            layers.append((f"relu{index}", nn.ReLU(inplace=True)))
            layers.append((f"pool{index}", nn.MaxPool2d(2, 2)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.flatten_size = c2 * (height // 4) * (width // 4)
        head: list[tuple[str, nn.Module]] = [
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(self.flatten_size, hidden)),
            ("relu3", nn.ReLU(inplace=True)),
        ]
        if dropout > 0:
            head.append(("dropout", nn.Dropout(float(dropout))))
        head.append(("fc2", nn.Linear(hidden, num_classes)))
        self.classifier = nn.Sequential(OrderedDict(head))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model("simple_cnn", description="the article's CNN: 2 conv + 2 FC layers")
def simple_cnn(**kwargs: Any) -> nn.Module:
    return SimpleCNN(**kwargs)


@register_model("simple_cnn_dropout", description="simple_cnn with dropout 0.5 before the head")
def simple_cnn_dropout(*, dropout: float = 0.5, **kwargs: Any) -> nn.Module:
    return SimpleCNN(dropout=dropout, **kwargs)


@register_model("simple_cnn_bn", description="simple_cnn with BatchNorm after each convolution")
def simple_cnn_bn(**kwargs: Any) -> nn.Module:
    return SimpleCNN(batch_norm=True, **kwargs)


@register_model(
    "resnet18",
    default_input_size=(224, 224),
    description="torchvision ResNet-18 with a new head, for transfer learning",
)
def resnet18(
    *,
    num_classes: int,
    in_channels: int = 3,
    input_size: tuple[int, int] = (224, 224),
    weights: str | Path | None = None,
) -> nn.Module:
    return _build_torchvision("resnet18", num_classes, in_channels, input_size, weights, {})


# --------------------------------------------------------------------------------------------
# torchvision models, adapted to the number of classes and input channels


def _build_torchvision(
    tv_name: str,
    num_classes: int,
    in_channels: int,
    input_size: tuple[int, int],
    weights: str | Path | None,
    arch_args: dict[str, Any],
) -> nn.Module:
    """A torchvision classifier for ``num_classes`` and ``in_channels``; with ``weights``, the
    ImageNet network is built, loaded, then given a new head (and first convolution)."""
    import torchvision

    kwargs = dict(arch_args)
    if tv_name in _AUX_LOGITS_MODELS:
        kwargs.setdefault("aux_logits", False)
        kwargs.setdefault("init_weights", True)
    if tv_name.startswith("vit_") and weights is None and input_size[0] == input_size[1]:
        kwargs.setdefault("image_size", input_size[0])
    probed = _check_input_size(tv_name, in_channels, input_size, kwargs)
    try:
        if weights is None:
            model = torchvision.models.get_model(
                tv_name, weights=None, num_classes=num_classes, **kwargs
            )
            if in_channels != 3:
                _replace_first_conv(model, in_channels, tv_name, from_pretrained=False)
        else:
            # ImageNet weights: build the 1000-class network, load, swap head and first conv.
            model = torchvision.models.get_model(tv_name, weights=None, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for torchvision model {tv_name!r}: {exc}") from exc
    if weights is not None:
        state = read_state_dict(weights)
        _load_pretrained(model, state, Path(weights))
        _replace_head(model, num_classes, tv_name)
        if in_channels != 3:
            _replace_first_conv(model, in_channels, tv_name, from_pretrained=True)
    if not probed:
        _probe_built(model, tv_name, in_channels, input_size)
    return model


class InputSizeError(ConfigError):
    """A torchvision network cannot take the input size asked for. The message names the flag
    that sets the size (``--input-size`` for train and summary; export says its own)."""

    def __init__(self, tv_name: str, shape: tuple[int, int, int], reason: str) -> None:
        import torchvision

        weights_enum = torchvision.models.get_model_weights(tv_name).DEFAULT
        self.tv_name, self.shape, self.reason = tv_name, shape, reason
        self.crop_size = weights_enum.transforms().crop_size
        self.min_size = weights_enum.meta.get("min_size")
        super().__init__(self.advice("--input-size"))

    def advice(self, flag: str) -> str:
        """The message, asking for ``flag`` to set another size."""
        channels, height, width = self.shape
        return (
            f"torchvision:{self.tv_name} cannot take a {channels}x{height}x{width} input "
            f"({self.reason}); its published weights use {self.crop_size} (minimum "
            f"{self.min_size}): pass {flag}"
        )


_SIZE_ERRORS = (RuntimeError, AssertionError, ValueError, IndexError)


def _check_input_size(
    tv_name: str, in_channels: int, input_size: tuple[int, int], kwargs: dict[str, Any]
) -> bool:
    """Run the network on the meta device (shapes only, no memory, no arithmetic) to reject an
    input size it cannot take, before any real weights are allocated. Returns False when the
    network cannot be built there (RegNets compute their widths from tensors): it is then
    probed once built (:func:`_probe_built`)."""
    import torchvision

    height, width = input_size
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            probe = torchvision.models.get_model(tv_name, weights=None, **kwargs).eval()
        except NotImplementedError:  # "Cannot copy out of meta tensor": needs real tensors
            return False
        try:
            probe(torch.empty(1, 3, height, width))
        except _SIZE_ERRORS as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise InputSizeError(tv_name, (in_channels, height, width), reason) from exc
    return True


def _probe_built(
    model: nn.Module, tv_name: str, in_channels: int, input_size: tuple[int, int]
) -> None:
    """Run the built network on fake tensors (shapes only, no arithmetic) to reject an input
    size it cannot take."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    height, width = input_size
    was_training = model.training
    model.eval()
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, torch.no_grad():
            model(mode.from_tensor(torch.empty(1, in_channels, height, width)))
    except _SIZE_ERRORS as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InputSizeError(tv_name, (in_channels, height, width), reason) from exc
    finally:
        model.train(was_training)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, or a ``.pth``/``.pt`` file read with
    ``torch.load(weights_only=True)`` (never a full unpickle)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(
            f"weights file not found: {path} (edgeport never downloads weights; save torchvision's "
            f"ImageNet weights there first, as .safetensors or .pth)"
        )
    if path.suffix == ".safetensors":
        from edgeport.train.checkpoint import read_safetensors  # it imports this module

        return read_safetensors(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as exc:
        # torch's message suggests weights_only=False; edgeport never does that, so keep only
        # the line saying what was refused.
        lines = str(exc).splitlines()
        reason = next((ln.strip() for ln in lines if "WeightsUnpickler error" in ln), None)
        raise ModelLoadError(
            f"weights file {path} could not be read as a weights-only PyTorch file "
            f"(it may be truncated, or hold more than tensors): "
            f"{reason or (lines[0] if lines else type(exc).__name__)}; "
            "save the state dict alone, or convert it to .safetensors"
        ) from exc
    for key in ("state_dict", "model"):  # common wrappers around a state dict
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelLoadError(f"weights file {path} does not hold a state dict of tensors")
    return data


def state_dict_mismatch(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]
) -> list[str]:
    """What keeps ``state`` from loading strictly where ``expected`` is: missing, unexpected and
    wrongly shaped tensors, each with a count and examples. Empty when they match."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} tensors, e.g. {missing[:3]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors, e.g. {unexpected[:3]}")
    if wrong:
        parts.append(f"{len(wrong)} with the wrong shape, e.g. {wrong[:3]}")
    return parts


def _load_pretrained(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ImageNet weights strictly (auxiliary classifiers aside), naming any mismatch."""
    expected = model.state_dict()
    ignored = ("AuxLogits.", "aux1.", "aux2.")
    state = {k: v for k, v in state.items() if not (k.startswith(ignored) and k not in expected)}
    problems = state_dict_mismatch(expected, state)
    if problems:
        raise ModelLoadError(
            f"weights file {path} does not match the ImageNet (1000-class, 3-channel) "
            "architecture: " + "; ".join(problems)
        )
    model.load_state_dict(state)


def _conv_geometry(conv: nn.Conv2d) -> tuple[Any, Any, Any, Any]:
    """(kernel_size, stride, padding, dilation) of a convolution, to build a like one."""
    return conv.kernel_size, conv.stride, conv.padding, conv.dilation


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def head_module_name(model: nn.Module) -> str:
    """Name of the final classification layer (the last Linear, or a 1x1 conv classifier)."""
    if isinstance(model, SimpleCNN):
        return "classifier"
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not candidates:
        raise ConfigError(f"cannot find a classification head in {type(model).__name__}")
    return candidates[-1][0]


def _replace_head(model: nn.Module, num_classes: int, tv_name: str) -> None:
    """Swap the classification head for a fresh one with ``num_classes`` outputs."""
    name = head_module_name(model)
    old = model.get_submodule(name)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    elif isinstance(old, nn.Conv2d):  # squeezenet's 1x1 conv classifier
        new = nn.Conv2d(old.in_channels, num_classes, *_conv_geometry(old)[:3])
    else:  # pragma: no cover - head_module_name returns only the two types
        raise ConfigError(f"cannot replace the head {name} of torchvision:{tv_name}")
    _set_submodule(model, name, new)
    log.debug("torchvision:%s: new head %s -> %d classes", tv_name, name, num_classes)


def _replace_first_conv(
    model: nn.Module, in_channels: int, tv_name: str, *, from_pretrained: bool
) -> None:
    """Swap the first RGB convolution for one taking ``in_channels``. With pretrained weights a
    grey input gets the RGB kernels summed over channels (timm's ``adapt_input_conv``), so a grey
    image replicated to RGB and the same grey image on one channel give the same features."""
    convs = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3
    ]
    if not convs:
        raise ConfigError(
            f"torchvision:{tv_name} has no 3-channel first convolution to adapt to "
            f"{in_channels} channels; use in_channels=3 (grey images are replicated)"
        )
    name, old = convs[0]
    if old.groups != 1:
        raise ConfigError(f"cannot adapt the grouped first convolution of torchvision:{tv_name}")
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        *_conv_geometry(old),
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if from_pretrained:
        with torch.no_grad():
            new.weight.copy_(old.weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1))
            if old.bias is not None and new.bias is not None:
                new.bias.copy_(old.bias)
    _set_submodule(model, name, new)


def freeze_all_but_head(model: nn.Module) -> list[str]:
    """Stop gradients everywhere except the classification head; returns the trainable names.

    BatchNorm running statistics still adapt to the new data in training mode (as in PyTorch's
    fine-tuning tutorial); only the parameters are frozen.
    """
    head = head_module_name(model)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith(head + ".")
        if param.requires_grad:
            trainable.append(name)
    return trainable
