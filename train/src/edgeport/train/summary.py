"""Per-layer output shape, parameter count and multiply-accumulates (MACs) of a model.

One forward pass of a zero batch with forward hooks on the leaf modules records what each layer
outputs. MACs are counted for the layers that do the arithmetic: convolutions
(``out_elements * in_channels / groups * kernel_h * kernel_w``) and linear layers
(``out_elements * in_features``); activations, pooling and normalisation count 0. Attention
blocks that call ``torch`` functions directly (ViT, Swin) are not counted, which the total says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgeport.runtime.errors import ConfigError


@dataclass(frozen=True)
class LayerSummary:
    name: str
    kind: str
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int
    macs: int


@dataclass
class ModelSummary:
    layers: list[LayerSummary]
    input_shape: tuple[int, ...]  # (C, H, W)
    output_shape: tuple[int, ...]
    total_params: int
    trainable_params: int
    total_macs: int
    uncounted: list[str] = field(default_factory=list)  # module types whose MACs are not counted

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_macs": self.total_macs,
            "uncounted": self.uncounted,
            "layers": [
                {
                    "name": layer.name,
                    "kind": layer.kind,
                    "output_shape": list(layer.output_shape),
                    "params": layer.params,
                    "macs": layer.macs,
                }
                for layer in self.layers
            ],
        }

    def table(self) -> str:
        """A fixed-width table, one row per layer, then the totals."""
        rows = [("layer", "type", "output shape", "params", "MACs")]
        for layer in self.layers:
            rows.append(
                (
                    layer.name,
                    layer.kind,
                    "x".join(map(str, layer.output_shape)),
                    f"{layer.params:,}",
                    f"{layer.macs:,}",
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines = [
            "  ".join(
                cell.rjust(width) if i >= 3 else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(
            f"input {'x'.join(map(str, self.input_shape))} -> output "
            f"{'x'.join(map(str, self.output_shape))}: {self.total_params:,} parameters "
            f"({self.trainable_params:,} trainable), {self.total_macs:,} MACs "
            f"({format_count(self.total_macs)}) per image"
        )
        if self.uncounted:
            lines.append(f"MACs not counted inside: {', '.join(self.uncounted)}")
        return "\n".join(lines)


def format_count(value: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return str(value)


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """MACs of one leaf module for one sample (``output`` has the batch dimension)."""
    per_sample = math.prod(output.shape[1:])
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        return per_sample * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return per_sample * module.in_features
    return 0


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    """Run one zero image of ``input_shape`` (C, H, W) through ``model`` in eval mode."""
    if len(input_shape) < 1 or any(int(v) < 1 for v in input_shape):
        raise ConfigError(f"input shape must be positive, like 3x32x32, got {input_shape}")
    rows: list[LayerSummary] = []
    uncounted: set[str] = set()
    hooks = []

    def record(name: str) -> Any:
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            fired.add(name)
            if not isinstance(output, torch.Tensor):
                return
            params = sum(p.numel() for p in module.parameters(recurse=False))
            rows.append(
                LayerSummary(
                    name=name,
                    kind=type(module).__name__,
                    output_shape=tuple(output.shape[1:]),
                    params=params,
                    macs=layer_macs(module, output),
                )
            )

        return hook

    fired: set[str] = set()
    leaves = {n: m for n, m in model.named_modules() if n and not any(True for _ in m.children())}
    for name, module in leaves.items():
        hooks.append(module.register_forward_hook(record(name)))
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            output = model(torch.zeros(1, *input_shape, device=device))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"the model cannot take an input of shape {'x'.join(map(str, input_shape))}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    finally:
        for handle in hooks:
            handle.remove()
        model.train(was_training)
    # Weights used through torch functions rather than module calls (attention) escape the hooks.
    for name, module in model.named_modules():
        skipped = name in leaves and name not in fired
        own_weights = name not in leaves and any(
            "weight" in n for n, _ in module.named_parameters(recurse=False)
        )
        if (skipped and any(True for _ in module.parameters())) or own_weights:
            parent = model.get_submodule(name.rpartition(".")[0]) if skipped else module
            uncounted.add(type(parent).__name__)
    return ModelSummary(
        layers=rows,
        input_shape=tuple(int(v) for v in input_shape),
        output_shape=tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else (),
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_macs=sum(row.macs for row in rows),
        uncounted=sorted(uncounted),
    )
