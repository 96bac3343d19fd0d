"""The one-process ``edgeport serve`` over HTTP, spoken to by Triton's own client
(tritonclient.http) and by plain HTTP: metadata, model configuration, infer with JSON and binary
tensors, many concurrent requests merged and answered exactly, classify, and every bad request
refused with its message."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_graphs
from serve_helpers import ThreadedServer, error_of, http

from edgeport.runtime import load
from edgeport.runtime.serve.protocol import HEADER_LENGTH, encode_infer_request

pytestmark = pytest.mark.usefixtures("server")


def infer_triton(
    client: Any, model: str, feeds: dict[str, np.ndarray], binary: bool, outputs: list[str] | None
) -> Any:
    import tritonclient.http as httpclient

    inputs = []
    for name, array in feeds.items():
        datatype = {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}[array.dtype.name]
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in outputs or []]
    return client.infer(model, inputs, outputs=wanted or None)


def test_health_and_metadata(client: Any) -> None:
    assert client.is_server_live() and client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "edgeport" and "binary_tensor_data" in meta["extensions"]
    assert "model_configuration" in meta["extensions"]
    assert set(meta["models"]) >= {"cnn", "gemm", "tokens", "slow"}
    assert client.is_model_ready("tokens")
    tokens = client.get_model_metadata("tokens")
    assert tokens["inputs"] == [
        {"name": "ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "mask", "datatype": "BOOL", "shape": [-1, -1]},
    ]
    assert tokens["outputs"] == [
        {"name": "hidden", "datatype": "FP32", "shape": [-1, -1, 4]},
        {"name": "count", "datatype": "INT64", "shape": [-1]},
        {"name": "kept", "datatype": "BOOL", "shape": [-1, -1]},
    ]
    cnn = client.get_model_metadata("cnn")
    assert cnn["inputs"][0]["shape"] == [-1, 3, 32, 32] and cnn["platform"] == "onnxruntime_onnx"


def test_model_configuration_is_what_triton_reads(client: Any) -> None:
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2

    config = client.get_model_config("gemm")
    assert config["max_batch_size"] == 16 and config["backend"] == "onnxruntime"
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [1, 2, 2]}]
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [8],
        "max_queue_delay_microseconds": 0,
    }
    json_format.ParseDict(config, model_config_pb2.ModelConfig())  # Triton's own schema
    tokens = client.get_model_config("tokens")
    assert tokens["output"][0] == {"name": "hidden", "data_type": "TYPE_FP32", "dims": [-1, 4]}
    slow = client.get_model_config("slow")  # max_batch 1: no dynamic batching
    assert "dynamic_batching" not in slow and slow["max_batch_size"] > 0


@pytest.mark.parametrize("binary", [True, False])
def test_infer_through_tritonclient(
    client: Any, model_paths: dict[str, Path], binary: bool
) -> None:
    batch = rt_graphs.integer_batch(3, (3, 32, 32), seed=4)
    result = infer_triton(client, "cnn", {"input": batch}, binary, ["logits"])
    with load(model_paths["cnn"], threads=1) as model:
        expected = model.run(batch)
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    feeds = {"ids": np.array([[1, 2, 3], [4, 5, 9]]), "mask": np.array([[1, 0, 1], [1, 1, 0]]) > 0}
    result = infer_triton(client, "tokens", feeds, binary, ["count", "kept"])
    assert result.as_numpy("count").tolist() == [2, 2]
    assert np.array_equal(result.as_numpy("kept"), feeds["mask"])
    assert result.get_output("hidden") is None  # only the outputs asked for
    every = infer_triton(client, "tokens", feeds, binary, None)
    with load(model_paths["tokens"], threads=1) as model:
        local = model.infer(feeds)
    for name, array in local.items():
        assert np.array_equal(every.as_numpy(name), array), name


async def _concurrent(url: str, requests: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    import tritonclient.http as httpclient
    import tritonclient.http.aio as aioclient

    async with aioclient.InferenceServerClient(url, conn_limit=64, conn_timeout=120) as client:

        async def one(i: int, batch: np.ndarray) -> np.ndarray:
            tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch, binary_data=i % 2 == 0)
            result = await client.infer("gemm", [tensor])
            return result.as_numpy("logits")

        return list(await asyncio.gather(*(one(i, r["input"]) for i, r in enumerate(requests))))


def test_200_concurrent_requests_are_all_answered_exactly(server: ThreadedServer) -> None:
    rng = np.random.default_rng(7)
    requests = [
        {"input": rt_graphs.integer_batch(int(rng.integers(1, 4)), seed=i)} for i in range(200)
    ]
    answers = asyncio.run(_concurrent(server.url.removeprefix("http://"), requests))
    assert len(answers) == 200
    for request, answer in zip(requests, answers, strict=True):
        assert np.array_equal(answer, rt_graphs.gemm_reference(request["input"]))


def _png(size: tuple[int, int], seed: int) -> tuple[bytes, np.ndarray]:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue(), pixels


def test_classify_raw_and_multipart(server: ThreadedServer, model_paths: dict[str, Path]) -> None:
    first, first_pixels = _png((40, 30), 1)
    second, second_pixels = _png((32, 32), 2)
    url = server.model_url("cnn") + "/classify"
    status, _, body = http(url + "?top_k=3", first, {"content-type": "image/png"})
    assert status == 200, body
    (raw,) = json.loads(body)["predictions"]
    boundary = uuid.uuid4().hex
    parts = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{n}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for n, data in (("a", first), ("b", second))
    )
    multipart = parts + f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    status, _, body = http(url, multipart, headers)
    assert status == 200, body
    predictions = json.loads(body)["predictions"]
    with load(model_paths["cnn"], threads=1) as model:
        local = model.predict([first_pixels, second_pixels], top_k=5)
    assert raw["labels"] == local[0].labels[:3]
    for got, want in zip(predictions, local, strict=True):
        assert got["labels"] == want.labels and got["indices"] == want.indices
        np.testing.assert_allclose(got["probabilities"], want.probabilities, rtol=1e-4)


def _body(feeds: dict[str, np.ndarray], binary: bool = False) -> tuple[bytes, dict[str, str]]:
    return encode_infer_request(feeds, binary=binary)


def _x(shape: tuple[int, ...], dtype: type = np.float32) -> dict[str, np.ndarray]:
    return {"input": np.zeros(shape, dtype=dtype)}


def _nan() -> dict[str, np.ndarray]:
    batch = np.zeros((1, 1, 2, 2), np.float32)
    batch[0, 0, 1, 1] = np.nan
    return {"input": batch}


def _bad_requests() -> list[tuple[str, str, bytes, dict[str, str], int, str]]:
    """(id, model/path, body, headers, status, message) of each request the server refuses."""
    js = {"content-type": "application/json"}
    png = {"content-type": "image/png"}
    tokens = {"ids": np.zeros((1, 2), np.int64), "mask": np.ones((1, 2), bool)}
    gemm_x = _x((1, 1, 2, 2))
    unknown_output = json.dumps(
        {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [1], "data": [0]}],
            "outputs": [{"name": "probs"}],
        }
    ).encode()
    return [
        ("malformed-json", "cnn/infer", b'{"inputs": [', js, 400, "malformed JSON"),
        ("unknown-input", "gemm/infer", *_body({"nope": gemm_x["input"]}), 400, "unknown ['nope']"),
        ("missing-input", "tokens/infer", *_body({"ids": tokens["ids"]}), 400, "missing ['mask']"),
        (
            "wrong-datatype", "gemm/infer", *_body(_x((1, 1, 2, 2), np.int64)), 400,
            "expected dtype float32, got int64",
        ),
        (
            "wrong-shape", "cnn/infer", *_body(_x((1, 3, 32, 31)), binary=True), 400,
            "expected height x width 32x32, got 32x31",
        ),
        (
            "batch-out-of-range", "gemm/infer", *_body(_x((17, 1, 2, 2))), 400,
            "batch size 17 is outside this model's range 1..16",
        ),
        ("nan", "gemm/infer", *_body(_nan()), 400, "expected finite values, got 1 NaN"),
        (
            "symbols-disagree", "tokens/infer", *_body({**tokens, "mask": np.ones((1, 3), bool)}),
            400, "must agree",
        ),
        ("unknown-output", "gemm/infer", unknown_output, js, 400, "outputs are ['logits']"),
        ("image-does-not-decode", "cnn/classify", b"no", png, 400, "cannot read image 'body'"),
        ("empty-image", "cnn/classify", b"", png, 400, "the body is empty"),
        ("top-k", "cnn/classify?top_k=0", b"x", {}, 400, "top_k must be a positive integer"),
        ("not-a-classifier", "tokens/classify", b"x", {}, 400, "not an image classifier"),
        (
            "body-too-big", "cnn/infer", *_body(_x((100, 3, 32, 32)), binary=True), 413,
            "above this server's limit of 1,048,576 bytes",
        ),
        (
            "json-beyond-the-tensors", "gemm/infer", b" " * 100_000 + b"{}", js, 413,
            "above the 67,584 bytes that model 'gemm' can need for its inputs at batch 16",
        ),
        ("unknown-model", "resnet/infer", *_body(gemm_x), 404, "unknown model 'resnet'"),
        ("unknown-version", "gemm/versions/2/infer", *_body(gemm_x), 404, "version 1 only"),
        ("unknown-endpoint", "gemm/explain", b"{}", js, 404, "no endpoint /v2/models/gemm/ex"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in _bad_requests()],
)
def test_bad_requests_are_refused_with_their_message(
    server: ThreadedServer,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    got, response_headers, content = http(f"{server.url}/v2/models/{path}", body, headers)
    assert got == status, content
    assert message in error_of(content)
    assert response_headers.get("content-type", "").startswith("application/json")


def test_wrong_methods_and_paths(server: ThreadedServer) -> None:
    status, _, body = http(server.model_url("gemm") + "/infer")
    assert status == 405 and "infer takes POST, not GET" in error_of(body)
    status, _, body = http(server.url + "/v3/health")
    assert status == 404 and "the endpoints are under /v2" in error_of(body)
    status, _, body = http(server.url + "/v2/models/gemm/versions/1/ready")
    assert status == 200 and json.loads(body) == {"name": "gemm", "ready": True}


def test_binary_request_through_raw_http(server: ThreadedServer) -> None:
    batch = rt_graphs.integer_batch(2)
    body, headers = encode_infer_request({"input": batch}, binary=True)
    status, response_headers, content = http(server.model_url("gemm") + "/infer", body, headers)
    assert status == 200
    length = int(response_headers[HEADER_LENGTH.lower()])
    header = json.loads(content[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 2 * 3 * 4
    logits = np.frombuffer(content[length:], np.float32).reshape(2, 3)
    assert np.array_equal(logits, rt_graphs.gemm_reference(batch))
