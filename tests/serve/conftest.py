"""One real Ray cluster and one Serve instance for the whole test session, serving:

- ``cnn``: a simple_cnn_bn-shaped classifier with its card (3x32x32, 10 classes), batching on,
  a 1 MB body limit;
- ``gemm``: the exact gemm model as a bundle (batch range 1..16), two replicas (one is killed),
  batching on, a 1 s health check;
- ``tokens``: two inputs (int64 ids, bool mask) and three outputs (float32, int64, bool);
- ``slow``: four 512x512 MatMuls per sample, one request at a time and one queued (overload).

Tests share it and must leave it serving (the replica they kill is replaced). It starts with
the first test that needs it and stops after the last test of this folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))  # rtmodels

import rtmodels as rt
from onnx import TensorProto, helper, numpy_helper
from serve_helpers import free_port

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
    return rt._graph_model(
        nodes,
        [f("x", TensorProto.FLOAT, ["batch", SLOW_SIZE, SLOW_SIZE])],
        [f("y", TensorProto.FLOAT, ["batch", SLOW_SIZE, SLOW_SIZE])],
        [numpy_helper.from_array(weight, "W")],
        "slow",
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
        "cnn": rt.save(rt.small_cnn(card=cnn_card), root / "cnn.onnx"),
        "gemm": rt.gemm_bundle(root / "gemm", ("fp32",)),
        "tokens": rt.save(rt.token_model(), root / "tokens.onnx"),
        "slow": rt.save(slow_model(), root / "slow.onnx"),  # type: ignore[arg-type]
    }


def serve_settings(paths: dict[str, Path]) -> ServeSettings:
    models = (
        ModelSettings(
            paths["cnn"], name="cnn", threads=1, max_batch=8, max_body_mb=1.0, access_log=False
        ),
        ModelSettings(paths["gemm"], name="gemm", threads=1, replicas=2, health_check_period_s=1.0),
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
    return ServeSettings(models, port=free_port(), num_cpus=8, metrics_port=free_port())


_RUNNING: dict[str, Served] = {}


@pytest.fixture
def served(model_paths: dict[str, Path]) -> Served:
    """The session's cluster and server, started by the first test that needs it (about 20 s
    on two cores) and stopped after the last test of this folder, so the rest of the suite
    does not run beside an idle cluster."""
    if "server" not in _RUNNING:
        _RUNNING["server"] = serve_models(
            serve_settings(model_paths), system_config={"metrics_report_interval_ms": 500}
        )
    return _RUNNING["server"]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if "server" in _RUNNING and (nextitem is None or nextitem.path.parent != HERE):
        stop(_RUNNING.pop("server"))


@pytest.fixture
def client(served: Served) -> object:
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(served.url.removeprefix("http://"))
