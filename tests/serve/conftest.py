"""The servers the serve tests talk to, each started by the first test that needs it and
stopped after the last test of this folder:

- ``server``: the one-process server (HTTP and gRPC, in a thread of the test process);
- ``served``: a real Ray cluster with Serve (about 20 s to start on two cores; slow tests only).

Both serve the same models:

- ``cnn``: a simple_cnn_bn-shaped classifier with its card (3x32x32, 10 classes), batching on,
  a 1 MB body limit;
- ``gemm``: the exact gemm model as a bundle (batch range 1..16), batching on (on Ray: two
  replicas, one is killed, and a 1 s health check);
- ``tokens``: two inputs (int64 ids, bool mask) and three outputs (float32, int64, bool);
- ``slow``: four 512x512 MatMuls per sample, one call at a time and one request queued
  (overload);
- ``wide`` (one process only): the sum of a float32 row of any length (a large JSON body that
  is cheap to run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs
from onnx import TensorProto, helper, numpy_helper
from serve_helpers import ThreadedServer, free_port

from edgeport.runtime.card import ModelCard
from edgeport.runtime.serve.launch import Served, serve_models, stop
from edgeport.runtime.serve.settings import ModelSettings, ServeSettings

SLOW_SIZE = 512
HERE = Path(__file__).resolve().parent


def slow_model() -> object:
    """``x`` float32 [batch, 512, 512] through four MatMuls with a 512x512 weight: about one
    GFLOP per sample, tens of milliseconds on one thread."""
    weight = np.eye(SLOW_SIZE, dtype=np.float32) * 0.5
    nodes, prev = [], "x"
    for i in range(4):
        nodes.append(helper.make_node("MatMul", [prev, "W"], [f"m{i}"]))
        prev = f"m{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    f = helper.make_tensor_value_info
    return rt_graphs._graph_model(
        nodes,
        [f("x", TensorProto.FLOAT, ["batch", SLOW_SIZE, SLOW_SIZE])],
        [f("y", TensorProto.FLOAT, ["batch", SLOW_SIZE, SLOW_SIZE])],
        [numpy_helper.from_array(weight, "W")],
        "slow",
    )


def wide_model() -> object:
    """``x`` float32 [batch, n] -> ``total`` float32 [batch], the sum of each row."""
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    node = helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0)
    f = helper.make_tensor_value_info
    return rt_graphs._graph_model(
        [node],
        [f("x", TensorProto.FLOAT, ["batch", "n"])],
        [f("total", TensorProto.FLOAT, ["batch"])],
        [axes],
        "wide",
    )


@pytest.fixture(scope="session")
def cnn_card() -> ModelCard:
    return ModelCard(
        architecture="simple_cnn_bn",
        num_classes=10,
        class_names=tuple(f"class{i}" for i in range(10)),
        in_channels=3,
        input_size=(32, 32),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory: pytest.TempPathFactory, cnn_card: ModelCard) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served")
    return {
        "cnn": rt_graphs.save(rt_graphs.small_cnn(card=cnn_card), root / "cnn.onnx"),
        "gemm": rt_bundles.gemm_bundle(root / "gemm", ("fp32",)),
        "tokens": rt_graphs.save(rt_graphs.token_model(), root / "tokens.onnx"),
        "slow": rt_graphs.save(slow_model(), root / "slow.onnx"),  # type: ignore[arg-type]
        "wide": rt_graphs.save(wide_model(), root / "wide.onnx"),  # type: ignore[arg-type]
    }


def model_settings(paths: dict[str, Path], *, ray: bool) -> tuple[ModelSettings, ...]:
    models = (
        ModelSettings(
            paths["cnn"], name="cnn", threads=1, max_batch=8, max_body_mb=1.0, access_log=False
        ),
        ModelSettings(
            paths["gemm"],
            name="gemm",
            threads=1,
            replicas=2 if ray else 1,
            health_check_period_s=1.0,
        ),
        ModelSettings(paths["tokens"], name="tokens", threads=1, max_batch=4),
        ModelSettings(
            paths["slow"],
            name="slow",
            threads=1,
            max_batch=1,
            max_ongoing_requests=1,
            max_queued_requests=1,
        ),
    )
    wide = ModelSettings(paths["wide"], name="wide", threads=1, max_batch=1)
    return models if ray else (*models, wide)


_RUNNING: dict[str, object] = {}


@pytest.fixture
def server(model_paths: dict[str, Path]) -> ThreadedServer:
    """The one-process server, HTTP and gRPC on free ports."""
    if "server" not in _RUNNING:
        settings = ServeSettings(
            model_settings(model_paths, ray=False), port=free_port(), grpc_port=free_port()
        )
        _RUNNING["server"] = ThreadedServer(settings)
    return _RUNNING["server"]  # type: ignore[return-value]


@pytest.fixture
def served(model_paths: dict[str, Path]) -> Served:
    """The session's Ray cluster and Serve applications."""
    if "ray" not in _RUNNING:
        settings = ServeSettings(
            model_settings(model_paths, ray=True),
            port=free_port(),
            ray=True,
            num_cpus=8,
            metrics_port=free_port(),
            request_timeout_s=20.0,
        )
        _RUNNING["ray"] = serve_models(settings, system_config={"metrics_report_interval_ms": 500})
    return _RUNNING["ray"]  # type: ignore[return-value]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None or nextitem.path.parent != HERE:
        if "ray" in _RUNNING:
            stop(_RUNNING.pop("ray"))  # type: ignore[arg-type]
        if "server" in _RUNNING:
            _RUNNING.pop("server").stop()  # type: ignore[attr-defined]


@pytest.fixture
def client(server: ThreadedServer) -> object:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(server.url.removeprefix("http://"))


@pytest.fixture
def grpc_client(server: ThreadedServer) -> object:
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.settings.grpc_address)
