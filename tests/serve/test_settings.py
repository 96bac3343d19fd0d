"""Serve and load-test settings are checked when made, before any cluster starts; the command
line maps onto them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeport.runtime.cli import build_parser
from edgeport.runtime.cli.loadtest import load_test_settings
from edgeport.runtime.cli.serve import settings_from_args
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.serve.settings import ModelSettings, ServeSettings
from edgeport.runtime.tools.server_loadtest import LoadTestSettings


def test_defaults_and_derived_values(tmp_path: Path) -> None:
    model = ModelSettings(tmp_path / "resnet.fp32.onnx")
    assert model.name == "resnet.fp32" and model.path.is_absolute()
    assert ModelSettings(tmp_path / "bundle").name == "bundle"
    assert model.ongoing == 16 and model.cpus == 1 and not model.autoscaling
    assert ModelSettings(tmp_path / "m.onnx", max_batch=1).ongoing == 8
    assert model.app_name == "edgeport-model-resnet.fp32"
    assert model.route == "/v2/models/resnet.fp32"
    assert model.to_dict()["max_ongoing_requests"] == 16


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "a/b"}, "model name 'a/b' must be"),
        ({"replicas": 0}, "replicas must be a positive integer"),
        ({"min_replicas": 2}, "autoscaling needs both"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas 3 is above max_replicas 2"),
        ({"max_batch": 16, "max_ongoing_requests": 4}, "a replica could never gather a full"),
        ({"batch_wait_ms": -1}, "batch_wait_ms must be >= 0"),
        ({"max_queued_requests": 0}, "max_queued_requests (or -1) must be a positive"),
        ({"device": "tpu"}, "device must be None, 'cpu', 'cuda'"),
        ({"backend": "torch"}, "backend must be auto or one of"),
        ({"max_body_mb": 0}, "max_body_mb must be a positive number"),
    ],
)
def test_bad_model_settings_say_what_is_wrong(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match="invalid serve settings") as info:
        ModelSettings(tmp_path / "m.onnx", **kwargs)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_bad_server_settings(tmp_path: Path) -> None:
    model = ModelSettings(tmp_path / "m.onnx")
    for kwargs, message in (
        ({"models": ()}, "no model to serve"),
        ({"models": (model, model)}, "model names must differ"),
        ({"models": (model,), "port": 70000}, "port must be a TCP port"),
        ({"models": (model,), "ray_address": "auto", "num_cpus": 2}, "a cluster joined"),
        ({"models": (model,), "num_cpus": 2}, "configure Ray's cluster (--ray)"),
        ({"models": (model,), "grpc_port": 8000}, "the HTTP and gRPC ports must differ"),
        ({"models": (model,), "drain_s": 0}, "drain_s must be a positive number"),
        (
            {"models": (model,), "request_timeout_s": -1},
            "request_timeout_s must be a positive number",
        ),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            ServeSettings(**kwargs)  # type: ignore[arg-type]


def test_serve_flags_map_onto_settings(tmp_path: Path) -> None:
    argv = "--name m --min-replicas 1 --max-replicas 3 --threads 2 --max-batch 1 --port 9000"
    argv += " --max-queued-requests -1 --no-access-log --device cpu"
    args = build_parser().parse_args(["serve", str(tmp_path / "m.onnx"), *argv.split()])
    settings = settings_from_args(args)
    (model,) = settings.models
    assert (model.name, model.min_replicas, model.max_replicas, model.threads) == ("m", 1, 3, 2)
    assert model.max_batch == 1 and model.max_queued_requests == -1 and not model.access_log
    assert model.device == "cpu" and settings.port == 9000 and settings.ray_address is None
    assert not settings.on_ray and settings.grpc_port == 8001
    assert settings.grpc_address == "127.0.0.1:8001" and model.batch_wait_ms == 0


def test_grpc_and_ray_flags(tmp_path: Path) -> None:
    argv = ["serve", str(tmp_path / "m.onnx"), "--no-grpc", "--ray", "--num-cpus", "2"]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert settings.on_ray and settings.grpc_port is None and settings.num_cpus == 2
    argv = ["serve", str(tmp_path / "m.onnx"), "--grpc-port", "9001", "--instances", "2"]
    argv += ["--drain-s", "3", "--batch-wait-ms", "1.5"]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert settings.grpc_port == 9001 and settings.drain_s == 3.0
    assert settings.models[0].instances == 2 and settings.models[0].batch_wait_ms == 1.5


def test_load_test_settings() -> None:
    argv = "http://127.0.0.1:8000/v2/models/m/ --qps-sweep 10:30:10 --duration-s 2"
    args = build_parser().parse_args(["loadtest", *argv.split(), "--shapes", "x:2x3"])
    settings = load_test_settings(args)
    assert settings.url == "http://127.0.0.1:8000/v2/models/m"
    assert settings.targets == [10.0, 20.0, 30.0] and settings.shapes == {"x": (2, 3)}
    assert LoadTestSettings("http://h:1/v2/models/m", latency_bound_ms=5).targets is None
    grpc = LoadTestSettings("grpc://h:2/v2/models/m", concurrency=(1, 4))
    assert (grpc.protocol, grpc.address, grpc.model_name) == ("grpc", "h:2", "m")
    for kwargs, message in (
        ({"url": "http://h:1/models/m", "qps": 1}, "url must be http://HOST:PORT/v2/models/NAME"),
        ({"url": "http://h:1/v2/models/m"}, "give a concurrency, a QPS, a QPS sweep or a"),
        ({"url": "http://h:1/v2/models/m", "concurrency": (4,), "qps": 1}, "not both"),
        ({"url": "http://h:1/v2/models/m", "concurrency": (0,)}, "concurrency must be >= 1"),
        ({"url": "http://h:1/v2/models/m", "qps": 1, "protocol": "udp"}, "protocol must be"),
        ({"url": "http://h:1/v2/models/m", "qps": 1, "qps_sweep": (1, 2, 1)}, "not both"),
        ({"url": "http://h:1/v2/models/m", "qps_sweep": (5, 2, 1)}, "0 < start <= stop"),
    ):
        with pytest.raises(ConfigError, match=message):
            LoadTestSettings(**kwargs)  # type: ignore[arg-type]
    bad = build_parser().parse_args(["loadtest", "http://h:1/v2/models/m", "--qps-sweep", "1:2"])
    with pytest.raises(ConfigError, match="--qps-sweep expects A:B:STEP"):
        load_test_settings(bad)
