"""Where does an fp16/int8 ONNX model start to differ from its fp32 source? Layer by layer.

Every intermediate tensor of both models is exposed as an output and run with ONNX Runtime on
the CPU, fed every input the models have; tensors are matched by name (a quantized one through
the DequantizeLinear output of its Q/DQ pair: what the next layer reads) and compared by
relative L2 error, in graph order. The candidate file is also run at every graph-optimisation
level, to tell a mismatch of the graph from one of ORT's fused kernels. Needs the ``onnx``
package (the ``onnx`` extra).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from edgeport.runtime.backends.onnxrt import ort_errors
from edgeport.runtime.errors import BackendUnavailable, ConfigError, ModelLoadError
from edgeport.runtime.feeds import sample_count

log = logging.getLogger(__name__)

# Per-layer diagnosis: relative L2 error (||cand - ref|| / ||ref||) above which a tensor is
# called mismatched. A diagnostic threshold, not a pass/fail tolerance.
PER_LAYER_REL_L2 = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}
PER_LAYER_SAMPLES = 64
PER_LAYER_CHUNK = 8
OPT_LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


@dataclass(frozen=True)
class LayerDiff:
    """One intermediate tensor of the candidate against the fp32 ONNX model."""

    name: str
    op_type: str
    node: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    rel_l2: float
    cosine: float
    input_rel_l2: float  # largest rel_l2 among this node's compared inputs (0 for the first)
    via: str  # "name" (same tensor name) or "dequantize" (the DequantizeLinear output of it)

    @property
    def added_error(self) -> float:
        return self.rel_l2 - self.input_rel_l2

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op_type": self.op_type,
            "node": self.node,
            "shape": list(self.shape),
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "rel_l2": self.rel_l2,
            "cosine": self.cosine,
            "input_rel_l2": self.input_rel_l2,
            "added_error": self.added_error,
            "via": self.via,
        }


@dataclass(frozen=True)
class PerLayerReport:
    """Where the candidate's intermediate tensors start to differ from the fp32 model's."""

    reference: str
    candidate: str
    samples: int
    threshold: float
    layers: tuple[LayerDiff, ...]
    unmatched: int
    # the largest rel L2 of the candidate FILE's (not the exposed copy's) float outputs at each
    # ONNX Runtime graph-optimisation level: fused kernels can differ from the graph's arithmetic
    optimization_levels: dict[str, float] = field(default_factory=dict)

    @property
    def optimization_culprit(self) -> str | None:
        """The first optimisation level whose outputs exceed the threshold when the
        unoptimised graph's do not: then the mismatch comes from ORT's fused kernels."""
        levels = self.optimization_levels
        base = levels.get(OPT_LEVELS[0])
        if base is None or base > self.threshold:
            return None
        return next((lv for lv in OPT_LEVELS[1:] if levels.get(lv, 0.0) > self.threshold), None)

    @property
    def first_mismatch(self) -> LayerDiff | None:
        """The first tensor (in fp32 graph order) whose rel_l2 exceeds the threshold."""
        return next((layer for layer in self.layers if layer.rel_l2 > self.threshold), None)

    @property
    def largest_jump(self) -> LayerDiff | None:
        """The tensor whose node added the most error over its inputs' error."""
        return max(self.layers, key=lambda layer: layer.added_error, default=None)

    def summary(self) -> str:
        first, jump = self.first_mismatch, self.largest_jump
        start = (
            f"mismatch starts at {first.name!r} ({first.op_type}, rel L2 {first.rel_l2:.3g} > "
            f"{self.threshold:g})"
            if first
            else f"no tensor exceeds rel L2 {self.threshold:g}"
        )
        if jump is not None:
            start += (
                f"; largest added error at {jump.name!r} ({jump.op_type}): rel L2 "
                f"{jump.input_rel_l2:.3g} -> {jump.rel_l2:.3g}"
            )
        culprit = self.optimization_culprit
        if culprit is not None:
            levels = self.optimization_levels
            start += (
                f". The graph itself agrees (outputs rel L2 {levels[OPT_LEVELS[0]]:.3g} without "
                f"optimisation) but ONNX Runtime's {culprit} optimisations do not "
                f"({levels[culprit]:.3g}): the mismatch comes from fused kernels (for int8 on "
                "CPUs without VNNI, typically int8 saturation; quantize with reduce_range)"
            )
        return start

    def to_dict(self) -> dict[str, Any]:
        first, jump = self.first_mismatch, self.largest_jump
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "samples": self.samples,
            "threshold_rel_l2": self.threshold,
            "first_mismatch": first.name if first else None,
            "largest_jump": jump.name if jump else None,
            "summary": self.summary(),
            "matched": len(self.layers),
            "unmatched": self.unmatched,
            "optimization_levels": dict(self.optimization_levels),
            "optimization_culprit": self.optimization_culprit,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def _onnx_modules() -> tuple[Any, Any]:
    try:
        import onnx
    except ImportError as exc:
        raise BackendUnavailable(
            "--per-layer needs the onnx package to expose intermediate tensors: "
            "pip install 'edgeport-runtime[onnx]'"
        ) from exc
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(
            "--per-layer runs the models with ONNX Runtime: pip install 'edgeport-runtime[cpu]'"
        ) from exc
    return onnx, onnxruntime


class _Tensor(NamedTuple):
    """A node output of a model, in graph order, with the node that makes it."""

    name: str
    op_type: str
    node: str
    inputs: tuple[str, ...]  # the node's (non-empty) inputs


def _expose_all(onnx: Any, path: Path) -> tuple[bytes, list[_Tensor], dict[str, str], list[str]]:
    """A serialized copy of the model with every typed node output added as a graph output.

    Returns the bytes, the node outputs in graph order, a map from an original tensor name to
    the DequantizeLinear output that carries its quantized value, and the model's own outputs.
    """
    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError) as exc:
        log.info("shape inference failed on %s (%s); using declared types only", path.name, exc)
        inferred = model
    graph = inferred.graph
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in (*graph.value_info, *graph.output, *graph.input)
        if vi.type.HasField("tensor_type")
    }
    originals = [o.name for o in model.graph.output]
    existing = set(originals)
    order: list[_Tensor] = []
    producer: dict[str, Any] = {}
    for node in model.graph.node:
        inputs = tuple(i for i in node.input if i)
        for out in node.output:
            if not out:
                continue
            producer[out] = node
            order.append(_Tensor(out, node.op_type, node.name, inputs))
            if out not in existing and types.get(out):
                model.graph.output.append(onnx.helper.make_tensor_value_info(out, types[out], None))
                existing.add(out)
    dequantized: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not node.input:
            continue
        q = producer.get(node.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input:
            dequantized[q.input[0]] = node.output[0]
    return model.SerializeToString(), order, dequantized, originals


def _session(ort: Any, model: bytes | str, level: str = "ORT_DISABLE_ALL") -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3
    errors: tuple[type[BaseException], ...] = (*ort_errors(), ValueError)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except errors as exc:
        raise ModelLoadError(f"ONNX Runtime cannot open the per-layer copy: {exc}") from exc


_FLOAT_TYPES = {
    "tensor(float16)": np.float16,
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
}


def _run_session(sess: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``sess`` for ``feeds`` by input name; float inputs go in the session's
    float type (float16 for an fp16 model without float32 inputs)."""
    inputs = {}
    for inp in sess.get_inputs():
        value = feeds.get(inp.name)
        if value is None:
            raise ConfigError(
                f"per-layer comparison: the model needs input {inp.name!r}, the reference "
                f"inputs have {sorted(feeds)}"
            )
        float_type = _FLOAT_TYPES.get(inp.type)
        if value.dtype.kind == "f" and float_type is not None:
            value = value.astype(float_type, copy=False)
        inputs[inp.name] = value
    names = [o.name for o in sess.get_outputs()]
    try:
        values = sess.run(names, inputs)
    except ort_errors() as exc:
        raise ModelLoadError(f"ONNX Runtime cannot run the per-layer copy: {exc}") from exc
    return {n: np.asarray(v) for n, v in zip(names, values, strict=True)}


class _ErrorSums:
    """Streaming sums for one tensor's error statistics over several chunks of images."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape
        self.diff_sq = self.ref_sq = self.cand_sq = self.dot = self.abs_sum = 0.0
        self.max_abs = 0.0
        self.size = 0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r, c = ref.astype(np.float64), cand.astype(np.float64)
        d = c - r
        self.diff_sq += float((d * d).sum())
        self.ref_sq += float((r * r).sum())
        self.cand_sq += float((c * c).sum())
        self.dot += float((r * c).sum())
        self.abs_sum += float(np.abs(d).sum())
        self.max_abs = max(self.max_abs, float(np.abs(d).max()) if d.size else 0.0)
        self.size += d.size

    @property
    def rel_l2(self) -> float:
        return math.sqrt(self.diff_sq) / max(math.sqrt(self.ref_sq), 1e-12)

    @property
    def cosine(self) -> float:
        norms = math.sqrt(self.ref_sq) * math.sqrt(self.cand_sq)
        return self.dot / norms if norms > 0 else 1.0


def _rel_l2(reference: np.ndarray, candidate: np.ndarray) -> float:
    r, c = reference.astype(np.float64), candidate.astype(np.float64)
    return float(np.linalg.norm(c - r)) / max(float(np.linalg.norm(r)), 1e-12)


class _Accumulated(NamedTuple):
    sums: dict[str, _ErrorSums]
    via: dict[str, str]
    unmatched: set[str]
    outputs: dict[str, list[np.ndarray]]  # the reference model's own float outputs, per feed


def _accumulate(
    order: list[_Tensor],
    sessions: tuple[Any, Any],
    feeds: Sequence[Mapping[str, np.ndarray]],
    dequantized: dict[str, str],
    originals: list[str],
) -> _Accumulated:
    """Error sums of every float tensor the two exposed copies share, over every feed."""
    acc = _Accumulated({}, {}, set(), {name: [] for name in originals})
    for feed in feeds:
        ref_values, cand_values = (_run_session(sess, feed) for sess in sessions)
        for name in originals:
            acc.outputs[name].append(ref_values[name])
        for name, *_ in order:
            r = ref_values.get(name)
            if r is None or not np.issubdtype(r.dtype, np.floating):
                continue
            # a quantized tensor is compared as the next layer reads it: its dequantized value
            # (ONNX Runtime folds a Relu into the Q after a convolution, so the convolution's
            # own float output, under the Relu's name, still holds the negatives)
            if name in dequantized:
                c, how = cand_values.get(dequantized[name]), "dequantize"
            else:
                c, how = cand_values.get(name), "name"
            if c is None or c.shape != r.shape or not np.issubdtype(c.dtype, np.floating):
                acc.unmatched.add(name)
                continue
            acc.sums.setdefault(name, _ErrorSums(tuple(int(v) for v in r.shape[1:]))).add(r, c)
            acc.via[name] = how
    return acc


def _layers(order: list[_Tensor], acc: _Accumulated) -> list[LayerDiff]:
    layers: list[LayerDiff] = []
    errors: dict[str, float] = {}
    for name, op_type, node, inputs in order:
        sums = acc.sums.get(name)
        if sums is None or name in acc.unmatched:
            continue
        errors[name] = sums.rel_l2
        inputs_err = [errors[i] for i in inputs if i in errors]
        layers.append(
            LayerDiff(
                name=name,
                op_type=op_type,
                node=node,
                shape=sums.shape,
                max_abs=sums.max_abs,
                mean_abs=sums.abs_sum / max(sums.size, 1),
                rel_l2=sums.rel_l2,
                cosine=sums.cosine,
                input_rel_l2=max(inputs_err, default=0.0),
                via=acc.via[name],
            )
        )
    return layers


def _optimization_levels(
    ort: Any,
    candidate_path: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    reference: dict[str, list[np.ndarray]],
) -> dict[str, float]:
    """The candidate file's largest output rel L2 against the reference at each level."""
    levels = {}
    for level in OPT_LEVELS:
        sess = _session(ort, str(candidate_path), level)
        runs = [_run_session(sess, feed) for feed in feeds]
        errors = [
            _rel_l2(np.concatenate(ref), np.concatenate([run[name] for run in runs]))
            for name, ref in reference.items()
            if name in runs[0]
            and np.issubdtype(ref[0].dtype, np.floating)
            and np.issubdtype(runs[0][name].dtype, np.floating)
            and runs[0][name].shape == ref[0].shape
        ]
        levels[level] = max(errors, default=0.0)
    return levels


def compare_layers(
    reference_path: str | Path,
    candidate_path: str | Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    precision: str,
    optimization_levels: bool = True,
) -> PerLayerReport:
    """Compare every intermediate tensor of ``candidate_path`` with ``reference_path`` (fp32).

    ``feeds``: the inputs, one dict (every input by name) per run; samples lie along axis 0.
    Tensors are matched by name; for a Q/DQ model a tensor missing under its own name is matched
    through the DequantizeLinear output of its QuantizeLinear. Both copies run with ONNX Runtime
    on the CPU with graph optimisations off (exposed tensors cannot be fused away anyway). The
    candidate file itself is also run at every optimisation level, to tell a mismatch of the
    graph from one of ORT's fused kernels (unless ``optimization_levels`` is False: a file made
    for another engine need not run with ONNX Runtime's fused kernels).
    """
    if not feeds:
        raise ConfigError("per-layer comparison needs at least one sample")
    onnx, ort = _onnx_modules()
    reference_path, candidate_path = Path(reference_path), Path(candidate_path)
    ref_bytes, order, _, originals = _expose_all(onnx, reference_path)
    cand_bytes, _, dequantized, _ = _expose_all(onnx, candidate_path)
    sessions = (_session(ort, ref_bytes), _session(ort, cand_bytes))
    acc = _accumulate(order, sessions, feeds, dequantized, originals)
    return PerLayerReport(
        reference=reference_path.name,
        candidate=candidate_path.name,
        samples=sum(sample_count(feed) for feed in feeds),
        threshold=PER_LAYER_REL_L2.get(precision, 1e-2),
        layers=tuple(_layers(order, acc)),
        unmatched=len(acc.unmatched),
        optimization_levels=(
            _optimization_levels(ort, candidate_path, feeds, acc.outputs)
            if optimization_levels
            else {}
        ),
    )
