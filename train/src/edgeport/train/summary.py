"""Per-layer output shape, parameter count and multiply-accumulates (MACs) of a model.

One forward pass of a zero batch runs under ``torch.utils.flop_counter.FlopCounterMode``, which
counts the FLOPs of every convolution, matrix multiply and attention at the aten level; MACs are
FLOPs / 2. Forward hooks read the counter's running total before and after each module call, so
each leaf layer's row holds the MACs of its own call, and a container that computes outside its
layers (the attention of ``nn.MultiheadAttention``) gets a row for that arithmetic. Activations,
pooling and normalisation count 0. A layer holding a weight matrix or kernel whose arithmetic the
counter could not see (an operator without a FLOP formula) is named in ``uncounted``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.hooks import RemovableHandle

from edgeport.runtime.errors import ConfigError


@dataclass(frozen=True)
class LayerSummary:
    """One module call: a leaf layer, or a container's own arithmetic outside its layers."""

    name: str
    kind: str
    output_shape: tuple[int, ...]  # without the batch dimension
    params: int
    macs: int


@dataclass
class ModelSummary:
    """Every layer's row and the model's totals for one image."""

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
    """``1814073344`` -> ``1.81 G``: a count with a k/M/G suffix."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return str(value)


# Layers whose weight matrix is a lookup table, not arithmetic.
_LOOKUP_LAYERS = (nn.Embedding, nn.EmbeddingBag)


def _first_tensor(output: Any) -> torch.Tensor | None:
    """The output itself, or the first tensor of a tuple/list output (``nn.MultiheadAttention``)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


class _MacTracer:
    """Forward hooks on every module that attribute a running FLOP count to module calls.

    A call's MACs are the counter's growth during it; a container's own MACs are what is left
    after its children's calls. Leaves get a row per call; containers only when their own MACs
    are not zero, so the rows add up to the total.
    """

    def __init__(self, model: nn.Module, counter: FlopCounterMode) -> None:
        self.model = model
        self.counter = counter
        self.rows: list[LayerSummary] = []
        self.own_macs: dict[str, int] = {}  # per module name, summed over its calls
        self._stack: list[list[int]] = []  # per open call: [flops at entry, children's flops]

    def attach(self) -> list[RemovableHandle]:
        """Hook every module (the model too); the caller removes the returned handles."""
        handles = []
        for name, module in self.model.named_modules():
            handles.append(module.register_forward_pre_hook(self._enter))
            handles.append(module.register_forward_hook(self._leave(name)))
        return handles

    def _enter(self, _module: nn.Module, _inputs: Any) -> None:
        self._stack.append([self.counter.get_total_flops(), 0])

    def _leave(self, name: str) -> Any:
        """The post-forward hook of module ``name``: closes its call and records its row."""

        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            entry, children = self._stack.pop()
            flops = self.counter.get_total_flops() - entry
            if self._stack:
                self._stack[-1][1] += flops
            own = (flops - children) // 2
            self.own_macs[name] = self.own_macs.get(name, 0) + own
            tensor = _first_tensor(output)
            is_leaf = next(module.children(), None) is None
            if own or (is_leaf and tensor is not None):
                self.rows.append(
                    LayerSummary(
                        name=name or type(module).__name__,
                        kind=type(module).__name__,
                        output_shape=() if tensor is None else tuple(tensor.shape[1:]),
                        params=sum(p.numel() for p in module.parameters(recurse=False)),
                        macs=own,
                    )
                )

        return hook

    def uncounted(self) -> list[str]:
        """Types of layers with a weight matrix or kernel whose arithmetic went uncounted: run
        but counted 0, or never called while the module around them counted 0 of its own."""
        found = set()
        for name, module in self.model.named_modules():
            if next(module.children(), None) is not None or isinstance(module, _LOOKUP_LAYERS):
                continue
            if not any(p.dim() >= 2 for p in module.parameters(recurse=False)):
                continue
            if name not in self.own_macs:  # its weights were used through torch functions
                name = name.rpartition(".")[0]
                module = self.model.get_submodule(name)
            if not self.own_macs.get(name):
                found.add(type(module).__name__)
        return sorted(found)


@contextmanager
def _countable_attention() -> Iterator[None]:
    """Attention through plain matmuls the counter has formulas for: no fused fast path of
    ``nn.MultiheadAttention`` and math ``scaled_dot_product_attention`` (the CPU flash kernel
    has no FLOP formula)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    """Run one zero image of ``input_shape`` (C, H, W) through ``model`` in eval mode."""
    if len(input_shape) < 1 or any(int(v) < 1 for v in input_shape):
        raise ConfigError(f"input shape must be positive, like 3x32x32, got {input_shape}")
    counter = FlopCounterMode(display=False)
    tracer = _MacTracer(model, counter)
    handles = tracer.attach()
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad(), _countable_attention(), counter:
            output = model(torch.zeros(1, *input_shape, device=device))
    except (RuntimeError, ValueError, AssertionError) as exc:
        raise ConfigError(
            f"the model cannot take an input of shape {'x'.join(map(str, input_shape))}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return ModelSummary(
        layers=tracer.rows,
        input_shape=tuple(int(v) for v in input_shape),
        output_shape=tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else (),
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        total_macs=counter.get_total_flops() // 2,
        uncounted=tracer.uncounted(),
    )
