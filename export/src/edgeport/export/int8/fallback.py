"""Which layers to keep in float when an int8 file is too slow or does not agree.

- **Slow**: both files are profiled on the target engine (ONNX Runtime's profiler, OpenVINO's
  per-layer performance counters); every profiled kernel is attributed to a node of the fp32
  model (:class:`LayerNames`: engines fuse and rename, e.g. ``relu_nchwc`` is the NCHWc
  convolution whose fused Relu makes tensor ``relu``; ``input_QuantizeLinear`` quantizes the
  input of the convolution that reads it), and the layers whose int8 kernels cost most over
  their float ones are kept in float (:func:`costly_layers`).
- **Wrong**: every intermediate tensor of the int8 file is compared with the fp32 model's
  (:func:`edgeport.runtime.tools.per_layer.compare_layers`), and the layers that add the most
  error are kept in float (:func:`disagreeing_layers`).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.export.int8.recipes import WEIGHTED_OPS
from edgeport.runtime.errors import ExportError

log = logging.getLogger(__name__)

PROFILE_RUNS = 20
PROFILE_WARMUP = 3
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
# Q/DQ node names: ``<tensor>_QuantizeLinear`` (ONNX Runtime), ``QuantizeLinear_<tensor>_<n>``
# (NNCF)
_QDQ_NAME = (
    re.compile(r"^(?P<tensor>.+?)_(?:Quantize|Dequantize)Linear(?:_\d+)?$"),
    re.compile(r"^(?:Quantize|Dequantize)Linear_(?P<tensor>.+?)(?:_\d+)?$"),
)
_ENGINE_SUFFIX = re.compile(r"(?:_token_\d+|_nchwc)+$")


class LayerNames:
    """Maps the kernel names an engine's profiler reports to nodes of the fp32 model.

    A kernel is attributed to a node of that name (a fused activation to the weighted layer it
    follows); a Q/DQ node to the weighted layer making its tensor, else to the one reading it;
    a kernel named after a tensor to the layer making it; else to the longest weighted-layer
    name inside its own name.
    """

    def __init__(self, model: Any) -> None:
        graph = model.graph
        self.nodes = {node.name: node for node in graph.node if node.name}
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.readers: dict[str, list[Any]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.readers[name].append(node)
        self.weighted = sorted(
            (n.name for n in graph.node if n.op_type in WEIGHTED_OPS and n.name),
            key=len,
            reverse=True,
        )

    @classmethod
    def of(cls, path: Path) -> LayerNames:
        import onnx

        return cls(onnx.load(str(path), load_external_data=False))

    def _owner(self, node: Any) -> str:
        """A node's layer: itself, or the weighted layer an activation is fused into."""
        if node.op_type in WEIGHTED_OPS or node.op_type in QDQ_OPS or len(node.input) != 1:
            return str(node.name)
        source = self.producer.get(node.input[0])
        if source is not None and source.op_type in WEIGHTED_OPS and source.name:
            return str(source.name)
        return str(node.name)

    def _tensor_layer(self, tensor: str) -> str | None:
        node = self.producer.get(tensor)
        if node is not None and node.op_type in WEIGHTED_OPS:
            return str(node.name)
        reader = next((n for n in self.readers.get(tensor, []) if n.op_type in WEIGHTED_OPS), None)
        if reader is not None:
            return str(reader.name)
        return self._owner(node) if node is not None and node.name else None

    def weighted_left(self, exclude: Sequence[str]) -> int:
        """How many weighted layers remain quantized when ``exclude`` is kept in float."""
        return len(set(self.weighted) - set(exclude))

    def feeding(self, layer: str, depth: int = 6) -> list[str]:
        """The weighted layers whose outputs reach ``layer``'s inputs through other nodes only
        (activations, pooling, reshapes): where its input's Q/DQ pair comes from."""
        node = self.nodes.get(layer)
        found: list[str] = []
        frontier = [] if node is None else [(name, depth) for name in node.input]
        while frontier:
            tensor, left = frontier.pop()
            source = self.producer.get(tensor)
            if source is None or left == 0:
                continue
            if source.op_type in WEIGHTED_OPS:
                if source.name not in found:
                    found.append(str(source.name))
                continue
            frontier += [(name, left - 1) for name in source.input]
        return found

    def reading(self, layer: str) -> list[str]:
        """The nodes that read ``layer``'s outputs (each quantizes what it reads)."""
        node = self.nodes.get(layer)
        outputs = [] if node is None else [o for o in node.output if o]
        return [str(r.name) for o in outputs for r in self.readers.get(o, []) if r.name]

    def layer(self, kernel: str) -> str | None:
        """The fp32 node ``kernel`` (a profiled name) belongs to, None when none fits."""
        base = _ENGINE_SUFFIX.sub("", kernel.split("/")[0])
        for name in (kernel, base):
            if name in self.nodes:
                return self._owner(self.nodes[name])
        for pattern in _QDQ_NAME:
            match = pattern.match(base)
            if match and (found := self._tensor_layer(match["tensor"])) is not None:
                return found
        if base in self.producer:  # a fused kernel named after its output (``relu_nchwc``)
            node = self.producer[base]
            return self._owner(node) if node.name else self._tensor_layer(base)
        return next((name for name in self.weighted if name in kernel), None)


@dataclass(frozen=True)
class LayerCost:
    """A layer's time per run in the fp32 and the int8 file on one engine (microseconds)."""

    layer: str
    fp32_us: float
    int8_us: float

    @property
    def extra_us(self) -> float:
        return self.int8_us - self.fp32_us


def profile_kernels(
    backend: str, path: Path, feeds: Mapping[str, np.ndarray], threads: int | None
) -> dict[str, float]:
    """Mean time per run (microseconds) of every kernel the engine ran, by its name."""
    if backend == "onnxruntime-cpu":
        return _profile_onnxruntime(path, feeds, threads)
    if backend == "openvino":
        return _profile_openvino(path, feeds, threads)
    raise ExportError(f"no per-layer profiler for {backend} here")


def _profile_onnxruntime(
    path: Path, feeds: Mapping[str, np.ndarray], threads: int | None
) -> dict[str, float]:
    from edgeport.runtime.backends.onnxrt import OrtSettings
    from edgeport.runtime.tools.profile import ProfileConfig, profile_onnxruntime

    profile = profile_onnxruntime(
        path,
        "onnxruntime-cpu",
        list(feeds.values()),
        ProfileConfig(warmup_runs=PROFILE_WARMUP, runs=PROFILE_RUNS),
        OrtSettings(threads=threads),
    )
    return {layer.name: layer.mean_us for layer in profile.layers}


def _profile_openvino(
    path: Path, feeds: Mapping[str, np.ndarray], threads: int | None
) -> dict[str, float]:
    from edgeport.runtime.backends.openvino import OpenVinoSettings, import_openvino

    ov = import_openvino()
    config = {**OpenVinoSettings(threads=threads).config(), "PERF_COUNT": True}
    try:
        request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
    except RuntimeError as exc:
        raise ExportError(f"OpenVINO cannot compile {path.name}: {exc}") from exc
    arrays = list(feeds.values())
    totals: dict[str, float] = defaultdict(float)
    for run in range(PROFILE_WARMUP + PROFILE_RUNS):
        request.infer(arrays)
        if run < PROFILE_WARMUP:
            continue
        for info in request.get_profiling_info():
            totals[info.node_name] += info.real_time.total_seconds() * 1e6
    return {name: total / PROFILE_RUNS for name, total in totals.items()}


def layer_costs(
    backend: str,
    fp32: Path,
    int8: Path,
    names: LayerNames,
    feeds: Mapping[str, np.ndarray],
    threads: int | None = None,
) -> list[LayerCost]:
    """Every attributed layer's time in both files on ``backend``, most extra int8 cost first."""
    times: list[dict[str, float]] = []
    for path in (fp32, int8):
        per_layer: dict[str, float] = defaultdict(float)
        for kernel, micros in profile_kernels(backend, path, feeds, threads).items():
            layer = names.layer(kernel)
            if layer is not None:
                per_layer[layer] += micros
        times.append(per_layer)
    costs = [
        LayerCost(layer, times[0].get(layer, 0.0), times[1].get(layer, 0.0))
        for layer in set(times[0]) | set(times[1])
    ]
    return sorted(costs, key=lambda c: -c.extra_us)


def costly_layers(costs: Sequence[LayerCost], exclude: Sequence[str], limit: int) -> list[str]:
    """Up to ``limit`` layers (not in ``exclude``) that cost more in int8 than in float, the
    costliest first, enough to cover half of all such extra cost."""
    extra = [c for c in costs if c.extra_us > 0 and c.layer not in exclude]
    wanted, covered, chosen = sum(c.extra_us for c in extra) / 2, 0.0, []
    for cost in extra[:limit]:
        chosen.append(cost.layer)
        covered += cost.extra_us
        if covered >= wanted:
            break
    return chosen


def disagreeing_layers(
    reference: Path,
    candidate: Path,
    names: LayerNames,
    feeds: Mapping[str, np.ndarray],
    exclude: Sequence[str],
    limit: int,
) -> list[str]:
    """Up to ``limit`` layers (not in ``exclude``) that add the most error in ``candidate``
    against the fp32 ``reference``, worst first (``edgeport check --per-layer``'s comparison,
    on ONNX Runtime's CPU provider without graph optimisations)."""
    from edgeport.runtime.tools.per_layer import compare_layers

    report = compare_layers(
        reference, candidate, [dict(feeds)], precision="int8", optimization_levels=False
    )
    ranked = [
        (layer, diff.added_error)
        for diff in sorted(report.layers, key=lambda d: -d.added_error)
        if diff.added_error > 0
        and (layer := names.layer(diff.node) if diff.node else None)
        and layer not in exclude
    ]
    if not ranked:
        return []
    top, worst = ranked[0]
    # the worst layer, the layers making its inputs and those reading its outputs (the Q/DQ
    # pairs around it carry the error), then any other layer adding at least half as much
    wanted = [top, *names.feeding(top), *names.reading(top)]
    wanted += [layer for layer, error in ranked[1:] if error >= worst / 2]
    chosen: list[str] = []
    for layer in wanted:
        if layer not in exclude and layer not in chosen and len(chosen) < limit:
            chosen.append(layer)
    return chosen
