"""Triton's model configuration (``ModelConfig``) of a model, from one function: what
``edgeport serve`` answers at ``GET /v2/models/NAME/config`` and over gRPC ``ModelConfig`` (the
model configuration extension, read-only), and what ``edgeport export --triton-repo`` writes to
``config.pbtxt``.

The configuration is a dict in the protobuf's JSON form with its field names (``max_batch_size``,
``input``, ``data_type``: ``TYPE_FP32``, ...), as Triton's HTTP endpoint answers it;
:func:`to_pbtxt` writes it in protobuf text format. When every input and output shares one
dynamic leading (batch) dimension, ``max_batch_size`` is the largest batch and the dims leave
that axis out (Triton adds it); otherwise ``max_batch_size`` is 0 and the dims are whole.
Dynamic dimensions are -1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from edgeport.runtime.specs import TensorSpec

TRITON_TYPES = {  # spec dtype -> Triton's DataType name: TYPE_ + the protocol's datatype
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
    "bfloat16": "TYPE_BF16",
}
PLATFORMS = {  # artifact format -> (platform, backend)
    "onnx": ("onnxruntime_onnx", "onnxruntime"),
    "tensorrt": ("tensorrt_plan", "tensorrt"),
}
_ENUMS = {"data_type", "kind"}  # fields whose values are enum names (bare in text format)


def batched(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Whether every input and output starts with one shared dynamic (batch) dimension."""
    heads = {spec.shape[0] if spec.rank else 0 for spec in (*inputs, *outputs)}
    return len(heads) == 1 and isinstance(next(iter(heads)), str)


def _tensor(spec: TensorSpec, skip_batch: bool) -> dict[str, Any]:
    dims = [d if isinstance(d, int) else -1 for d in spec.shape[1 if skip_batch else 0 :]]
    return {"name": spec.name, "data_type": TRITON_TYPES[spec.dtype], "dims": dims}


def model_config(
    name: str,
    model_format: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    *,
    max_batch: int,
    preferred_batches: Sequence[int] = (),
    queue_delay_us: int | None = None,
    instances: int = 1,
) -> dict[str, Any]:
    """The ModelConfig of a model in ``model_format`` (``onnx`` or ``tensorrt``) taking batches
    up to ``max_batch``. ``queue_delay_us`` not None turns dynamic batching on, with
    ``preferred_batches`` (sizes above 1) as its preferred sizes; ``instances`` is the count of
    its instance group (CPU for ONNX, GPU for engines)."""
    platform, backend = PLATFORMS[model_format]
    whole = batched(inputs, outputs)
    config: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "backend": backend,
        "max_batch_size": max_batch if whole else 0,
        "input": [_tensor(s, whole) for s in inputs],
        "output": [_tensor(s, whole) for s in outputs],
    }
    if whole and queue_delay_us is not None:
        preferred = sorted({b for b in preferred_batches if 1 < b <= max_batch})
        dynamic: dict[str, Any] = {"max_queue_delay_microseconds": int(queue_delay_us)}
        if preferred:
            dynamic = {"preferred_batch_size": preferred, **dynamic}
        config["dynamic_batching"] = dynamic
    kind = "KIND_GPU" if model_format == "tensorrt" else "KIND_CPU"
    config["instance_group"] = [{"count": instances, "kind": kind}]
    return config


def _scalar(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and key not in _ENUMS:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _lines(config: Mapping[str, Any], indent: str) -> list[str]:
    lines = []
    for key, value in config.items():
        if isinstance(value, Mapping):
            lines += [f"{indent}{key} {{", *_lines(value, indent + "  "), f"{indent}}}"]
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            for item in value:
                lines += [f"{indent}{key} {{", *_lines(item, indent + "  "), f"{indent}}}"]
        elif isinstance(value, list):
            lines.append(f"{indent}{key}: [ {', '.join(_scalar(key, v) for v in value)} ]")
        else:
            lines.append(f"{indent}{key}: {_scalar(key, value)}")
    return lines


def to_pbtxt(config: Mapping[str, Any]) -> str:
    """``config`` in protobuf text format, as Triton reads ``config.pbtxt``."""
    return "\n".join(_lines(config, "")) + "\n"
