"""The one-process server's gRPC front end, spoken to by Triton's own client
(tritonclient.grpc): health, server and model metadata, Triton's model configuration, infer with
raw and typed contents, concurrent requests merged exactly, and refusals with gRPC status
codes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_graphs

from edgeport.runtime import load

pytestmark = pytest.mark.usefixtures("server")


def _input(name: str, array: np.ndarray) -> Any:
    import tritonclient.grpc as grpcclient

    datatype = {"float32": "FP32", "int64": "INT64", "bool": "BOOL"}[array.dtype.name]
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_health_metadata_and_config(grpc_client: Any) -> None:
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("gemm") and grpc_client.is_model_ready("gemm", "1")
    meta = grpc_client.get_server_metadata(as_json=True)
    assert meta["name"] == "edgeport" and "model_configuration" in meta["extensions"]
    tokens = grpc_client.get_model_metadata("tokens", as_json=True)
    assert [(t["name"], t["datatype"], t["shape"]) for t in tokens["inputs"]] == [
        ("ids", "INT64", ["-1", "-1"]),
        ("mask", "BOOL", ["-1", "-1"]),
    ]
    config = grpc_client.get_model_config("gemm", as_json=True)["config"]
    assert config["max_batch_size"] == 16 and config["platform"] == "onnxruntime_onnx"
    assert config["input"][0]["dims"] == ["1", "2", "2"]


def test_infer_raw_contents(grpc_client: Any, model_paths: dict[str, Path]) -> None:
    import tritonclient.grpc as grpcclient

    batch = rt_graphs.integer_batch(3, (3, 32, 32), seed=4)
    result = grpc_client.infer("cnn", [_input("input", batch)], request_id="r7")
    with load(model_paths["cnn"], threads=1) as model:
        expected = model.run(batch)
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-5)
    assert result.get_response().id == "r7"
    feeds = {"ids": np.array([[1, 2, 3], [4, 5, 9]]), "mask": np.array([[1, 0, 1], [1, 1, 0]]) > 0}
    wanted = [grpcclient.InferRequestedOutput("count"), grpcclient.InferRequestedOutput("kept")]
    result = grpc_client.infer("tokens", [_input(n, a) for n, a in feeds.items()], outputs=wanted)
    assert result.as_numpy("count").tolist() == [2, 2]
    assert np.array_equal(result.as_numpy("kept"), feeds["mask"])
    assert result.as_numpy("hidden") is None  # only the outputs asked for


def test_infer_typed_contents(grpc_client: Any) -> None:
    """A request whose values come in ``contents`` (as other clients send them)."""
    from tritonclient.grpc import service_pb2

    batch = rt_graphs.integer_batch(2)
    request = service_pb2.ModelInferRequest(model_name="gemm")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
    tensor.contents.fp32_contents.extend(batch.ravel().tolist())
    response = grpc_client._client_stub.ModelInfer(request)
    (output,) = response.outputs
    logits = np.frombuffer(response.raw_output_contents[0], np.float32).reshape(output.shape)
    assert np.array_equal(logits, rt_graphs.gemm_reference(batch))


async def _concurrent(address: str, requests: list[np.ndarray]) -> list[np.ndarray]:
    import tritonclient.grpc.aio as aioclient

    async with aioclient.InferenceServerClient(address) as client:

        async def one(batch: np.ndarray) -> np.ndarray:
            result = await client.infer("gemm", [_input("input", batch)])
            return result.as_numpy("logits")

        return list(await asyncio.gather(*(one(r) for r in requests)))


def test_concurrent_requests_are_answered_exactly(server: Any) -> None:
    rng = np.random.default_rng(3)
    requests = [rt_graphs.integer_batch(int(rng.integers(1, 4)), seed=i) for i in range(100)]
    answers = asyncio.run(_concurrent(server.settings.grpc_address, requests))
    for request, answer in zip(requests, answers, strict=True):
        assert np.array_equal(answer, rt_graphs.gemm_reference(request))


@pytest.mark.parametrize(
    ("model", "feeds", "code", "message"),
    [
        ("resnet", {"input": rt_graphs.integer_batch(1)}, "NOT_FOUND", "unknown model 'resnet'"),
        (
            "gemm",
            {"input": np.zeros((17, 1, 2, 2), np.float32)},
            "INVALID_ARGUMENT",
            "batch size 17 is outside this model's range 1..16",
        ),
        ("gemm", {"nope": rt_graphs.integer_batch(1)}, "INVALID_ARGUMENT", "unknown ['nope']"),
        (
            "cnn",
            {"input": np.full((1, 3, 32, 32), np.nan, np.float32)},
            "INVALID_ARGUMENT",
            "expected finite values",
        ),
    ],
)
def test_refusals_carry_status_and_message(
    grpc_client: Any, model: str, feeds: dict[str, np.ndarray], code: str, message: str
) -> None:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer(model, [_input(n, a) for n, a in feeds.items()])
    assert info.value.status() == f"StatusCode.{code}"
    assert message in info.value.message()
