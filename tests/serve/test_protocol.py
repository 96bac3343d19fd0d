"""The OIP codec without a server: every datatype both ways, JSON and binary, tritonclient's own
request bodies decoded and our responses parsed by tritonclient, and each malformed request
refused with a message that says what is wrong."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import ml_dtypes
import numpy as np
import pytest

from edgeport.runtime.errors import InputError
from edgeport.runtime.serve.protocol import (
    DATATYPES,
    HEADER_ALLOWANCE,
    HEADER_LENGTH,
    LARGE_JSON,
    InferRequest,
    RequestError,
    decode_grpc_infer,
    decode_infer_request,
    decode_infer_response,
    decompress,
    encode_grpc_infer,
    encode_infer_request,
    encode_infer_response,
    model_metadata,
    specs_from_metadata,
    tensor_body_limit,
)
from edgeport.runtime.specs import TensorSpec, numpy_dtype


def sample(dtype: str, shape: tuple[int, ...] = (2, 3)) -> np.ndarray:
    values = np.arange(np.prod(shape)).reshape(shape) % 5 - 2
    if dtype == "bool":
        return values > 0
    if dtype.startswith("uint"):
        values = values + 2
    return values.astype(numpy_dtype(dtype))


def decode(body: bytes, headers: dict[str, str], outputs: tuple[str, ...] = ()) -> InferRequest:
    return decode_infer_request(body, headers.get(HEADER_LENGTH.lower()), outputs)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("dtype", sorted(DATATYPES))
def test_every_datatype_round_trips(dtype: str, binary: bool) -> None:
    array = sample(dtype)
    body, headers = encode_infer_request({"x": array}, binary=binary)
    assert (HEADER_LENGTH.lower() in headers) == binary
    request = decode(body, headers, ("y",))
    got = request.feeds["x"]
    assert got.dtype == array.dtype and got.shape == array.shape
    assert np.array_equal(got.astype(np.float64), array.astype(np.float64))
    body, headers = encode_infer_response("m", request, {"y": array})
    outputs = decode_infer_response(body, headers)
    assert outputs["y"].dtype == array.dtype
    assert np.array_equal(outputs["y"].astype(np.float64), array.astype(np.float64))


def test_tritonclient_requests_decode_and_our_responses_parse() -> None:
    import tritonclient.http as httpclient

    x = sample("float32", (2, 4))
    ids = sample("int64", (2, 3))
    for binary in (True, False):
        inputs = [
            httpclient.InferInput("x", [2, 4], "FP32"),
            httpclient.InferInput("ids", [2, 3], "INT64"),
        ]
        inputs[0].set_data_from_numpy(x, binary_data=binary)
        inputs[1].set_data_from_numpy(ids, binary_data=binary)
        wanted = [httpclient.InferRequestedOutput("b", binary_data=binary)]
        body, length = httpclient.InferenceServerClient.generate_request_body(
            inputs, outputs=wanted, request_id="r1"
        )
        request = decode_infer_request(body, None if length is None else str(length), ("a", "b"))
        assert np.array_equal(request.feeds["x"], x) and np.array_equal(request.feeds["ids"], ids)
        assert request.outputs == ("b",) and request.id == "r1"
        content, headers = encode_infer_response("m", request, {"a": x, "b": ids})
        length_header = headers.get(HEADER_LENGTH.lower())
        result = httpclient.InferenceServerClient.parse_response_body(
            content, header_length=None if length_header is None else int(length_header)
        )
        assert result.get_output("a") is None
        assert np.array_equal(result.as_numpy("b"), ids)
        assert result.get_response()["id"] == "r1"


def test_binary_data_output_applies_unless_an_output_says_otherwise() -> None:
    x = {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.5]}
    request = decode_infer_request(
        json.dumps(
            {
                "inputs": [x],
                "outputs": [{"name": "y"}, {"name": "z", "parameters": {"binary_data": False}}],
                "parameters": {"binary_data_output": True},
            }
        ).encode(),
        None,
        ("y", "z"),
    )
    assert request.wants_binary("y") and not request.wants_binary("z")
    request = decode_infer_request(
        json.dumps({"inputs": [x], "parameters": {"binary_data_output": True}}).encode(),
        None,
        ("y", "z"),
    )
    body, headers = encode_infer_response(
        "m", request, {"y": np.ones(2, np.float32), "z": np.zeros(1, np.int64)}
    )
    header = json.loads(body[: int(headers[HEADER_LENGTH.lower()])])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 8]


def test_metadata_has_protocol_datatypes_and_minus_one_for_dynamic_dims() -> None:
    specs = (
        TensorSpec("image", "float32", ("batch", 3, None, 4)),
        TensorSpec("mask", "bool", ("batch", "seq")),
        TensorSpec("half", "bfloat16", (2,)),
    )
    meta = model_metadata("m", "onnxruntime_onnx", specs, specs[:1])
    assert meta["inputs"] == [
        {"name": "image", "datatype": "FP32", "shape": [-1, 3, -1, 4]},
        {"name": "mask", "datatype": "BOOL", "shape": [-1, -1]},
        {"name": "half", "datatype": "BF16", "shape": [2]},
    ]
    back = specs_from_metadata(meta)
    assert [(s.name, s.dtype, s.shape) for s in back] == [
        ("image", "float32", (None, 3, None, 4)),
        ("mask", "bool", (None, None)),
        ("half", "bfloat16", (2,)),
    ]


def test_bfloat16_json_values_are_floats() -> None:
    array = np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16)
    body, _ = encode_infer_response("m", InferRequest({}), {"y": array})
    assert json.loads(body)["outputs"][0] == {
        "name": "y",
        "datatype": "BF16",
        "shape": [2],
        "data": [1.5, -2.0],
    }


def _json(inputs: object, **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


X = {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}
BAD_REQUESTS = [
    (b"{not json", None, "malformed JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (_json([]), None, "'inputs' must be a non-empty list"),
    (_json([{**X, "datatype": "FP8"}]), None, "datatype 'FP8' is not supported"),
    (_json([{**X, "datatype": "BYTES"}]), None, "datatype 'BYTES' is not supported"),
    (_json([{**X, "shape": [1, -2]}]), None, "'shape' must be a list of non-negative"),
    (_json([{**X, "data": [1, 2, 3]}]), None, "shape [1, 2] needs 2 values, 'data' has 3"),
    (_json([{**X, "data": [[1], [2, 3]]}]), None, "not a rectangular list"),
    (_json([{**X, "data": ["a", "b"]}]), None, "'data' must hold numbers"),
    (_json([{**X, "datatype": "INT64", "data": [1.5, 2]}]), None, "must hold integers"),
    (_json([{**X, "datatype": "BOOL", "data": [1, 0]}]), None, "must hold true/false"),
    (_json([{**X, "datatype": "INT8", "data": [1, 300]}]), None, "values must lie in [-128, 127]"),
    (_json([X, X]), None, "input 'x' is given twice"),
    (_json([{"name": "x", "datatype": "FP32", "shape": [1]}]), None, "no 'data'"),
    (_json([X], outputs=[{"name": "nope"}]), None, "this model's outputs are ['y']"),
    (_json([X]), "999", "must be an integer between 0 and the body's length"),
]


@pytest.mark.parametrize(("body", "length", "message"), BAD_REQUESTS)
def test_malformed_requests_say_what_is_wrong(
    body: bytes, length: str | None, message: str
) -> None:
    with pytest.raises(RequestError) as info:
        decode_infer_request(body, length, ("y",))
    assert message in str(info.value)
    assert info.value.status == 400


def test_binary_sizes_are_checked() -> None:
    header = _json(
        [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]
    )
    blob = np.ones(2, np.float32).tobytes()
    ok = decode_infer_request(header + blob, str(len(header)), ())
    assert ok.feeds["x"].tolist() == [1.0, 1.0]
    for body, message in (
        (header + blob[:4], "4 bytes of binary data left, 8 needed"),
        (header + blob + b"xx", "2 bytes of binary data are left over"),
    ):
        with pytest.raises(RequestError, match=message):
            decode_infer_request(body, str(len(header)), ())
    with pytest.raises(RequestError, match="no Inference-Header-Content-Length header"):
        decode_infer_request(header, None, ())
    wrong = _json(
        [{"name": "x", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": 8}}]
    )
    with pytest.raises(RequestError, match="binary_data_size 8 does not match shape"):
        decode_infer_request(wrong + blob, str(len(wrong)), ())


def test_compressed_bodies_are_inflated_within_the_limit() -> None:
    body = _json([X])
    assert decompress(gzip.compress(body), "gzip", 1 << 20) == body
    bomb = gzip.compress(b"0" * (1 << 22))
    with pytest.raises(RequestError, match="above the limit") as info:
        decompress(bomb, "gzip", 1 << 20)
    assert info.value.status == 413
    with pytest.raises(RequestError, match="not supported") as info:
        decompress(body, "br", 1 << 20)
    assert info.value.status == 415


def test_error_responses_raise_on_the_client() -> None:
    with pytest.raises(InputError, match="the server refused the request: bad"):
        decode_infer_response(b'{"error": "bad"}', {})


def _large(data: str, datatype: str = "FP32", shape: tuple[int, ...] = (2, 20_000)) -> bytes:
    head = {"name": "x", "datatype": datatype, "shape": list(shape)}
    text = json.dumps(head)[:-1] + f', "data": {data}}}'
    return ('{"inputs": [' + text + '], "id": "big"}').encode()


def test_large_json_is_read_in_chunks_exactly() -> None:
    """Above LARGE_JSON, nested or flat, spaced or not: the same arrays as the small path."""
    values = np.random.default_rng(0).standard_normal((2, 20_000)).astype(np.float32)
    nested = json.dumps(values.tolist())
    flat = ",".join(repr(float(v)) for v in values.ravel())
    for text in (nested, f"[{flat}]"):
        body = _large(text)
        assert len(body) > LARGE_JSON
        request = decode_infer_request(body, None, ())
        assert request.id == "big" and request.feeds["x"].dtype == np.float32
        assert np.array_equal(request.feeds["x"], values)
    ints = np.arange(40_000, dtype=np.int64).reshape(2, 20_000)
    got = decode_infer_request(_large(json.dumps(ints.tolist()), "INT64"), None, ())
    assert np.array_equal(got.feeds["x"], ints)
    flags = (np.arange(40_000) % 3 == 0).reshape(2, 20_000)
    got = decode_infer_request(_large(json.dumps(flags.tolist()), "BOOL"), None, ())
    assert np.array_equal(got.feeds["x"], flags)


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        (json.dumps([0.5] * 40_000), "INT64", "'data' must hold integers"),
        (json.dumps(["1"] * 40_000), "FP32", "'data' must hold numbers"),
        (json.dumps([1.0] * 39_999), "FP32", "needs 40000 values, 'data' has 39999"),
        (json.dumps([300] * 40_000), "INT8", "values must lie in [-128, 127]"),
    ],
)
def test_large_json_refusals_say_what_is_wrong(data: str, datatype: str, message: str) -> None:
    with pytest.raises(RequestError) as info:
        decode_infer_request(_large(data, datatype), None, ())
    assert message in str(info.value) and info.value.status == 400


def test_body_limit_follows_the_inputs() -> None:
    image = TensorSpec("x", "float32", ("batch", 3, 4, 4))
    assert tensor_body_limit([image], 16) == 16 * 48 * 32 + HEADER_ALLOWANCE
    mask = TensorSpec("m", "bool", ("batch", 8))
    assert tensor_body_limit([image, mask], 2) == 2 * (48 * 32 + 8 * 8) + HEADER_ALLOWANCE
    assert tensor_body_limit([TensorSpec("ids", "int64", ("batch", "seq"))], 4) is None


def test_grpc_messages_decode_and_encode() -> None:
    from tritonclient.grpc import service_pb2

    x, ids = sample("float16", (2, 3)), sample("int64", (2, 2))
    message = service_pb2.ModelInferRequest(model_name="m", id="g1")
    message.inputs.add(name="x", datatype="FP16", shape=[2, 3])
    message.inputs.add(name="ids", datatype="INT64", shape=[2, 2])
    message.raw_input_contents.extend([x.tobytes(), ids.tobytes()])
    message.outputs.add(name="b")
    request = decode_grpc_infer(message, ("a", "b"))
    assert np.array_equal(request.feeds["x"], x) and np.array_equal(request.feeds["ids"], ids)
    assert request.outputs == ("b",) and request.id == "g1"
    response = encode_grpc_infer(service_pb2.ModelInferResponse(), "m", request, {"a": x, "b": ids})
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("b", "INT64", [2, 2])
    assert np.array_equal(np.frombuffer(response.raw_output_contents[0], np.int64), ids.ravel())
    typed = service_pb2.ModelInferRequest(model_name="m")
    tensor = typed.inputs.add(name="ids", datatype="INT32", shape=[3])
    tensor.contents.int_contents.extend([1, -2, 3])
    assert decode_grpc_infer(typed, ()).feeds["ids"].tolist() == [1, -2, 3]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.raw_input_contents.append(b"\0" * 8), "raw_input_contents has 2 entries"),
        (
            lambda m: (
                m.inputs.add(name="x", datatype="FP32", shape=[0]),
                m.raw_input_contents.append(b""),
            ),
            "given twice",
        ),
        (lambda m: m.outputs.add(name="nope"), "this model's outputs are ['y']"),
        (lambda m: m.inputs[0].shape.__setitem__(0, 3), "does not match shape [3]"),
    ],
)
def test_grpc_malformed_requests_say_what_is_wrong(edit: Any, message: str) -> None:
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[2])
    request.raw_input_contents.append(np.ones(2, np.float32).tobytes())
    edit(request)
    with pytest.raises(RequestError, match=re.escape(message)):
        decode_grpc_infer(request, ("y",))
    half = service_pb2.ModelInferRequest(model_name="m")
    half.inputs.add(name="x", datatype="FP16", shape=[1])
    with pytest.raises(RequestError, match="FP16 tensors must come in raw_input_contents"):
        decode_grpc_infer(half, ("y",))
