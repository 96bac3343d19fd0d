"""The Open Inference Protocol (KServe v2, what Triton speaks) as numpy in, bytes out: the one
codec of ``edgeport serve``, its load-test client and its tests. No Ray, no HTTP server here.

An infer request is JSON, optionally followed by the *binary tensor data* extension: the header
``Inference-Header-Content-Length`` gives the JSON's length, and each input whose
``parameters.binary_data_size`` is set has its raw little-endian bytes after the JSON, in the
order of the inputs. Outputs come back as JSON ``data`` or, when asked for (per output
``parameters.binary_data``, or ``parameters.binary_data_output`` for all), the same way.

Datatypes use the protocol's names (``FP32``, ``INT64``, ``BOOL``, ``BF16``, ...); shapes in
model metadata have -1 for every dimension that is not fixed.

The gRPC front end maps the protocol's protobuf messages through the same functions
(:func:`decode_grpc_infer`, :func:`encode_grpc_infer`): the messages are used by their fields
only, so this module needs no protobuf.

A large JSON body is decoded without building a Python object per value: the tensors' ``data``
stays raw JSON while the request is parsed (msgspec), then each is read into numpy in chunks of
about a megabyte, so a thread decoding it gives the interpreter back between chunks.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from edgeport.runtime.errors import InputError
from edgeport.runtime.specs import UNBOUNDED, TensorSpec, numpy_dtype

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"
VERSION = "1"  # each served model has one version
DATATYPES = {  # spec dtype -> protocol datatype
    "bool": "BOOL",
    "uint8": "UINT8",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "bfloat16": "BF16",
}
SPEC_DTYPES = {v: k for k, v in DATATYPES.items()}
_JSON_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "V": "iuf"}  # bfloat16's kind is V
LARGE_JSON = 1 << 16  # JSON above this many bytes: data kept raw, read into numpy in chunks
_CHUNK = 1 << 20  # bytes of JSON numbers read per numpy call
_TEXT_DTYPES = {"f": np.float64, "V": np.float64, "i": np.int64, "u": np.uint64}
JSON_VALUE_BYTES = {"b": 8, "i": 24, "u": 24, "f": 32, "V": 32}  # JSON text budget per value
HEADER_ALLOWANCE = 1 << 16  # bytes a request may spend beyond its tensors' values
STATUS_GRPC = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "UNIMPLEMENTED"}
STATUS_GRPC |= {413: "RESOURCE_EXHAUSTED", 415: "INVALID_ARGUMENT", 503: "UNAVAILABLE"}


class RequestError(InputError):
    """A request the server refuses: ``status`` is its HTTP status (400 unless said)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# -- datatypes and metadata ---------------------------------------------------------------------


def datatype(dtype: str) -> str:
    """The protocol datatype of a spec dtype (``float32`` -> ``FP32``)."""
    return DATATYPES[dtype]


def numpy_of(datatype_name: str, what: str) -> np.dtype:
    """The numpy dtype of a protocol datatype; ``what`` names the tensor in the error."""
    dtype = SPEC_DTYPES.get(datatype_name) if isinstance(datatype_name, str) else None
    if dtype is None:
        raise RequestError(
            f"{what}: datatype {datatype_name!r} is not supported; expected one of "
            f"{', '.join(DATATYPES.values())}"
        )
    return numpy_dtype(dtype)


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    """``{"name", "datatype", "shape"}`` with -1 for every dimension that is not fixed."""
    shape = [d if isinstance(d, int) else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": datatype(spec.dtype), "shape": shape}


def model_metadata(
    name: str, platform: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    """The body of ``GET /v2/models/{name}``."""
    return {
        "name": name,
        "versions": [VERSION],
        "platform": platform,
        "inputs": [tensor_metadata(s) for s in inputs],
        "outputs": [tensor_metadata(s) for s in outputs],
    }


def specs_from_metadata(metadata: Mapping[str, Any]) -> tuple[TensorSpec, ...]:
    """A client's view of a model's inputs: TensorSpecs with None for the -1 dimensions."""
    try:
        return tuple(
            TensorSpec(
                t["name"],
                SPEC_DTYPES[t["datatype"]],
                tuple(None if d == -1 else int(d) for d in t["shape"]),
            )
            for t in metadata["inputs"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"model metadata is not what the protocol describes ({exc!r}): {metadata}"
        ) from exc


def _little_endian(array: np.ndarray) -> np.ndarray:
    """The protocol's byte order is little-endian; swap on a big-endian host."""
    return array.byteswap() if sys.byteorder == "big" and array.dtype.itemsize > 1 else array


# -- request bodies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class InferRequest:
    """A decoded infer request: the inputs by name, the outputs asked for (None: all), each
    output's own ``binary_data`` flag where it has one, and ``binary_data_output``."""

    feeds: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None = None
    binary: Mapping[str, bool] = field(default_factory=dict)
    binary_default: bool = False
    id: str | None = None

    def wants_binary(self, name: str) -> bool:
        """An output's own flag, else the request's ``binary_data_output``."""
        return self.binary.get(name, self.binary_default)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """A ``Content-Encoding: gzip``/``deflate`` body inflated, refused past ``limit`` bytes."""
    if not encoding or encoding == "identity":
        return body
    waves = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding.lower())
    if waves is None:
        raise RequestError(
            f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none", 415
        )
    inflater = zlib.decompressobj(waves)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise RequestError(f"the body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit:
        raise RequestError(f"the inflated body is above the limit of {limit:,} bytes", 413)
    return data


def split_body(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview]:
    """The JSON object at the start of ``body`` and the binary data after it."""
    size = len(body)
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 <= size <= len(body):
            raise RequestError(
                f"{HEADER_LENGTH} must be an integer between 0 and the body's length "
                f"{len(body)}, got {header_length!r}"
            )
    header = _parse_header(memoryview(body)[:size])
    if not isinstance(header, dict):
        raise RequestError(f"the request must be a JSON object, got {type(header).__name__}")
    return header, memoryview(body)[size:]


class _RawInput(msgspec.Struct):
    """An input of a large request, its ``data`` left as raw JSON."""

    name: Any = None
    datatype: Any = None
    shape: Any = None
    parameters: Any = None
    data: msgspec.Raw = msgspec.Raw(b"")


class _RawRequest(msgspec.Struct):
    inputs: list[_RawInput]
    outputs: Any = None
    parameters: Any = None
    id: Any = None


_RAW_DECODER = msgspec.json.Decoder(_RawRequest)


def _parse_header(text: memoryview) -> Any:
    """The JSON object of a request; above :data:`LARGE_JSON` bytes each input's ``data`` stays
    a ``msgspec.Raw`` (a request not of the protocol's shape is parsed whole, to say why)."""
    if len(text) > LARGE_JSON:
        try:
            raw = _RAW_DECODER.decode(text)
        except msgspec.ValidationError:
            pass  # not shaped as the protocol says: the generic parse below names the problem
        except msgspec.DecodeError as exc:
            raise RequestError(f"malformed JSON in the request: {exc}") from exc
        else:
            inputs = [
                {k: v for k, v in msgspec.structs.asdict(t).items() if k != "data" or len(v)}
                for t in raw.inputs
            ]
            header = {"inputs": inputs, "outputs": raw.outputs, "parameters": raw.parameters}
            return {**header, "id": raw.id} if raw.id is not None else header
    try:
        return json.loads(bytes(text))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RequestError(f"malformed JSON in the request: {exc}") from exc


def _numbers_from_text(raw: msgspec.Raw, dtype: np.dtype, what: str) -> np.ndarray:
    """The numbers of a large JSON ``data`` list (nested or flat), read in chunks of about
    :data:`_CHUNK` bytes cut at commas; a value that is no number of ``dtype``'s kind fails."""
    blob, parts, start = bytes(raw), [], 0
    parse = _TEXT_DTYPES[dtype.kind]
    while start < len(blob):
        end = blob.find(b",", min(start + _CHUNK, len(blob)))
        end = len(blob) if end < 0 else end
        chunk = blob[start:end].translate(None, b"[] \t\r\n")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                parts.append(np.fromstring(chunk, dtype=parse, sep=","))
        except (ValueError, DeprecationWarning) as exc:
            want = "integers" if dtype.kind in "iu" else "numbers"
            raise RequestError(f"{what}: 'data' must hold {want} ({exc})") from exc
        start = end + 1
    return np.concatenate(parts) if parts else np.zeros(0, parse)


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise RequestError(f"{what}: '{key}' must be {names}, got {value!r}")
    return value


def _shape(tensor: Mapping[str, Any], what: str) -> tuple[int, ...]:
    shape = _field(tensor, "shape", list, what)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(f"{what}: 'shape' must be a list of non-negative integers, got {shape}")
    return tuple(shape)


def _from_json(data: Any, dtype: np.dtype, shape: tuple[int, ...], what: str) -> np.ndarray:
    if isinstance(data, msgspec.Raw):
        if len(data) > LARGE_JSON and dtype.kind != "b":
            values = _numbers_from_text(data, dtype, what)
            return _checked_values(values, dtype, shape, what)
        try:
            data = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise RequestError(f"{what}: 'data' is not valid JSON: {exc}") from exc
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise RequestError(f"{what}: 'data' is not a rectangular list of numbers: {exc}") from exc
    return _checked_values(values, dtype, shape, what)


def _checked_values(
    values: np.ndarray, dtype: np.dtype, shape: tuple[int, ...], what: str
) -> np.ndarray:
    if values.size != math.prod(shape):
        raise RequestError(
            f"{what}: shape {list(shape)} needs {math.prod(shape)} values, 'data' has {values.size}"
        )
    if values.size and values.dtype.kind not in _JSON_KINDS[dtype.kind]:
        want = {"b": "true/false", "i": "integers", "u": "integers"}.get(dtype.kind, "numbers")
        raise RequestError(f"{what}: 'data' must hold {want}, got {values.dtype.kind!r} values")
    if dtype.kind in "iu" and values.size:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise RequestError(
                f"{what}: values must lie in [{info.min}, {info.max}] for {dtype}, got "
                f"[{values.min()}, {values.max()}]"
            )
    return values.astype(dtype).reshape(shape)


def _from_binary(
    data: memoryview, dtype: np.dtype, shape: tuple[int, ...], size: Any, what: str
) -> np.ndarray:
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise RequestError(
            f"{what}: binary_data_size {size!r} does not match shape {list(shape)} of "
            f"{dtype} ({expected} bytes)"
        )
    if len(data) < expected:
        raise RequestError(
            f"{what}: the body has {len(data)} bytes of binary data left, {expected} needed"
        )
    return _little_endian(np.frombuffer(data[:expected], dtype=dtype)).reshape(shape)


def _decode_input(
    tensor: Any, tail: memoryview, has_header: bool
) -> tuple[str, np.ndarray, memoryview]:
    if not isinstance(tensor, dict):
        raise RequestError(f"each of 'inputs' must be a JSON object, got {tensor!r}")
    name = _field(tensor, "name", str, "an input")
    what = f"input {name!r}"
    dtype = numpy_of(_field(tensor, "datatype", str, what), what)
    shape = _shape(tensor, what)
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is None:
        if "data" not in tensor:
            raise RequestError(f"{what}: no 'data' and no parameters.binary_data_size")
        return name, _from_json(tensor["data"], dtype, shape, what), tail
    if not has_header:
        raise RequestError(
            f"{what} has binary_data_size but the request has no {HEADER_LENGTH} header"
        )
    return name, _from_binary(tail, dtype, shape, size, what), tail[size:]


def _requested_outputs(
    header: Mapping[str, Any], known: Sequence[str]
) -> tuple[tuple[str, ...] | None, dict[str, bool]]:
    requested = header.get("outputs")
    if requested is None:
        return None, {}
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise RequestError(f"'outputs' must be a list of objects, got {requested!r}")
    names = tuple(_field(o, "name", str, "an output") for o in requested)
    unknown = [n for n in names if n not in known]
    if unknown or len(set(names)) != len(names):
        raise RequestError(
            f"'outputs' asks for {list(names)}; this model's outputs are {list(known)} (each "
            "at most once)"
        )
    binary = {}
    for name, output in zip(names, requested, strict=True):
        params = output.get("parameters")
        if isinstance(params, dict) and isinstance(params.get("binary_data"), bool):
            binary[name] = params["binary_data"]
    return names, binary


def decode_infer_request(
    body: bytes, header_length: str | None, output_names: Sequence[str]
) -> InferRequest:
    """Decode an infer request; ``output_names`` are the model's outputs. Each input keeps the
    datatype it was sent as: checking it against the model is the runtime's job."""
    header, tail = split_body(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError(f"'inputs' must be a non-empty list of tensors, got {inputs!r}")
    feeds: dict[str, np.ndarray] = {}
    for tensor in inputs:
        name, array, tail = _decode_input(tensor, tail, header_length is not None)
        if name in feeds:
            raise RequestError(f"input {name!r} is given twice")
        feeds[name] = array
    if len(tail):
        raise RequestError(f"{len(tail)} bytes of binary data are left over after the inputs")
    outputs, binary = _requested_outputs(header, output_names)
    params = header.get("parameters") or {}
    request_id = header.get("id")
    return InferRequest(
        feeds=feeds,
        outputs=outputs,
        binary=binary,
        binary_default=isinstance(params, dict) and params.get("binary_data_output") is True,
        id=request_id if isinstance(request_id, str) else None,
    )


def tensor_body_limit(inputs: Sequence[TensorSpec], max_batch: int) -> int | None:
    """The most bytes an infer request can need to carry inputs of these specs as JSON (the
    larger encoding), batches up to ``max_batch``, plus :data:`HEADER_ALLOWANCE`; None when a
    dimension other than the batch axis is unbounded."""
    total = 0
    for spec in inputs:
        values = 1
        for axis in range(spec.rank):
            high = spec.dim_range(axis)[2]
            if axis == 0 and isinstance(spec.shape[0], str):
                high = min(high, max_batch)
            if high >= UNBOUNDED:
                return None
            values *= high
        total += values * JSON_VALUE_BYTES[numpy_dtype(spec.dtype).kind]
    return total + HEADER_ALLOWANCE


# -- response bodies ----------------------------------------------------------------------------


def _json_values(array: np.ndarray) -> list[Any]:
    flat = array.reshape(-1)
    if flat.dtype.kind not in "biuf" or flat.dtype == np.float16:  # bfloat16, float16
        flat = flat.astype(np.float32)
    return flat.tolist()


def _tensor_entry(name: str, array: np.ndarray, binary: bool) -> tuple[dict[str, Any], bytes]:
    entry: dict[str, Any] = {
        "name": name,
        "datatype": datatype(array.dtype.name),
        "shape": list(array.shape),
    }
    if not binary:
        entry["data"] = _json_values(array)
        return entry, b""
    raw = _little_endian(np.ascontiguousarray(array)).tobytes()
    entry["parameters"] = {"binary_data_size": len(raw)}
    return entry, raw


def encode_tensors(
    header: dict[str, Any], tensors: Mapping[str, np.ndarray], binary: Sequence[str], key: str
) -> tuple[bytes, dict[str, str]]:
    """``header`` with ``tensors`` under ``key`` (JSON data, or binary for names in
    ``binary``), as a body and its headers. Used for responses and for client requests."""
    entries, blobs = [], []
    for name, array in tensors.items():
        entry, raw = _tensor_entry(name, array, name in binary)
        entries.append(entry)
        blobs.append(raw)
    text = json.dumps({**header, key: entries}).encode()
    if not any(blobs):
        return text, {"content-type": JSON_TYPE}
    headers = {"content-type": BINARY_TYPE, HEADER_LENGTH.lower(): str(len(text))}
    return b"".join([text, *blobs]), headers


def encode_infer_response(
    model_name: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """The response to ``request``: the outputs it asked for (all when none), in its order."""
    names = request.outputs if request.outputs is not None else tuple(outputs)
    chosen = {n: outputs[n] for n in names}
    binary = [n for n in names if request.wants_binary(n)]
    header: dict[str, Any] = {"model_name": model_name, "model_version": VERSION}
    if request.id is not None:
        header["id"] = request.id
    return encode_tensors(header, chosen, binary, "outputs")


# -- gRPC messages ------------------------------------------------------------------------------

_CONTENTS = {  # protocol datatype -> the InferTensorContents field of its values
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def _grpc_input(tensor: Any, raw: bytes | None) -> np.ndarray:
    what = f"input {tensor.name!r}"
    dtype = numpy_of(tensor.datatype, what)
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise RequestError(f"{what}: 'shape' must hold non-negative integers, got {list(shape)}")
    if raw is not None:
        return _from_binary(memoryview(raw), dtype, shape, len(raw), what)
    field_name = _CONTENTS.get(tensor.datatype)
    if field_name is None:
        raise RequestError(f"{what}: {tensor.datatype} tensors must come in raw_input_contents")
    return _checked_values(np.asarray(getattr(tensor.contents, field_name)), dtype, shape, what)


def decode_grpc_infer(message: Any, output_names: Sequence[str]) -> InferRequest:
    """A ``ModelInferRequest`` as an :class:`InferRequest`: inputs from ``raw_input_contents``
    (one per input, in order) or from their typed ``contents``."""
    raw = list(message.raw_input_contents)
    if not message.inputs:
        raise RequestError("the request has no inputs")
    if raw and len(raw) != len(message.inputs):
        raise RequestError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; send "
            "one per input, or none and each input's contents"
        )
    feeds: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(message.inputs):
        if tensor.name in feeds:
            raise RequestError(f"input {tensor.name!r} is given twice")
        feeds[tensor.name] = _grpc_input(tensor, raw[index] if raw else None)
    names = tuple(o.name for o in message.outputs) or None
    if names is not None:
        _requested_outputs({"outputs": [{"name": n} for n in names]}, output_names)
    return InferRequest(feeds=feeds, outputs=names, id=message.id or None)


def encode_grpc_infer(
    response: Any, model_name: str, request: InferRequest, outputs: Mapping[str, np.ndarray]
) -> Any:
    """Fill a ``ModelInferResponse`` with the outputs ``request`` asked for, as raw contents."""
    response.model_name = model_name
    response.model_version = VERSION
    if request.id is not None:
        response.id = request.id
    for name in request.outputs if request.outputs is not None else tuple(outputs):
        array = outputs[name]
        tensor = response.outputs.add()
        tensor.name = name
        tensor.datatype = datatype(array.dtype.name)
        tensor.shape.extend(array.shape)
        response.raw_output_contents.append(_little_endian(np.ascontiguousarray(array)).tobytes())
    return response


# -- the client's side --------------------------------------------------------------------------


def encode_infer_request(
    feeds: Mapping[str, np.ndarray],
    *,
    binary: bool = True,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """An infer request body and headers for ``feeds``; ``binary`` sends inputs and asks for
    outputs as binary data, else everything is JSON."""
    header: dict[str, Any] = {}
    if request_id is not None:
        header["id"] = request_id
    if outputs is not None:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    elif binary:
        header["parameters"] = {"binary_data_output": True}
    return encode_tensors(header, feeds, list(feeds) if binary else [], "inputs")


def decode_infer_response(body: bytes, headers: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The outputs of an infer response, by name."""
    lowered = {k.lower(): v for k, v in headers.items()}
    header, tail = split_body(body, lowered.get(HEADER_LENGTH.lower()))
    if "error" in header:
        raise InputError(f"the server refused the request: {header['error']}")
    outputs: dict[str, np.ndarray] = {}
    for tensor in header.get("outputs") or []:
        name, array, tail = _decode_input(tensor, tail, HEADER_LENGTH.lower() in lowered)
        outputs[name] = array
    return outputs
