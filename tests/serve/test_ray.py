"""``edgeport serve --ray``: the same endpoints on a real local Ray cluster (slow: the cluster
takes about 20 s to start on two cores). Triton's client gets the same answers and refusals as
from one process, a killed replica is replaced and every request answered, the metrics reach
Ray's Prometheus endpoint, and the command joins a running cluster and leaves it as it was."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rt_graphs
from serve_helpers import error_of, http, metric_value, scrape, wait_for

from edgeport.runtime import load
from edgeport.runtime.serve.launch import Served
from edgeport.runtime.serve.protocol import encode_infer_request

pytestmark = pytest.mark.slow


def test_triton_client_through_ray_serve(served: Served, model_paths: dict[str, Path]) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_server_ready() and client.is_model_ready("gemm")
    assert client.get_model_config("gemm")["max_batch_size"] == 16
    batch = rt_graphs.integer_batch(3, (3, 32, 32), seed=4)
    tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    with load(model_paths["cnn"], threads=1) as model:
        expected = model.run(batch)
    logits = client.infer("cnn", [tensor]).as_numpy("logits")
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    status, _, body = http(
        served.model_url("gemm") + "/infer",
        *encode_infer_request({"input": np.zeros((17, 1, 2, 2), np.float32)}),
    )
    assert status == 400 and "batch size 17 is outside" in error_of(body)


def _replicas(app: str) -> set[str]:
    import ray

    prefix = f"SERVE_REPLICA::{app}#"
    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    }


def _running_replicas(app: str) -> int:
    from ray import serve

    deployment = serve.status().applications[app].deployments["model"]
    return int(deployment.replica_states.get("RUNNING", 0))


def test_a_killed_replica_is_replaced_and_every_request_answered(served: Served) -> None:
    import ray

    app = "edgeport-model-gemm"
    before = _replicas(app)
    assert len(before) == 2
    url = served.model_url("gemm") + "/infer"
    results: list[tuple[int, bytes]] = []

    def client(index: int) -> None:
        for i in range(30):
            batch = rt_graphs.integer_batch(1, seed=index * 100 + i)
            status, _, body = http(url, *encode_infer_request({"input": batch}, binary=False))
            results.append((status, body))
            if status == 200:
                logits = json.loads(body)["outputs"][0]["data"]
                assert logits == rt_graphs.gemm_reference(batch).ravel().tolist()
            time.sleep(0.02)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.3)
    victim = sorted(before)[0]
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for worker in workers:
        worker.join(timeout=120)
    assert not any(w.is_alive() for w in workers)
    assert len(results) == 4 * 30  # each request got an answer
    statuses = [s for s, _ in results]
    # a request in flight on the victim fails (500) or, when Ray's proxy loses it, times out (408)
    assert set(statuses) <= {200, 408, 500, 503}, statuses
    assert statuses.count(200) >= 4 * 30 - 8, statuses  # only those in flight on the victim
    wait_for(
        lambda: _running_replicas(app) == 2 and victim not in _replicas(app), 60, "a new replica"
    )
    assert http(url, *encode_infer_request({"input": rt_graphs.integer_batch(1)}))[0] == 200


def test_metrics_are_exported_on_rays_metrics_port(served: Served) -> None:
    assert served.metrics_url is not None and served.metrics_url.startswith("http://127.0.0.1:")
    url = served.model_url("cnn") + "/infer"
    body = encode_infer_request({"input": np.zeros((2, 3, 32, 32), np.float32)})
    for _ in range(3):
        assert http(url, *body)[0] == 200
    assert http(url, b"{", {"content-type": "application/json"})[0] == 400

    def counted() -> str | None:
        text = scrape(served.metrics_url)  # type: ignore[arg-type]
        ok = metric_value(text, "ray_edgeport_requests_total", model="cnn", status="200")
        bad = metric_value(text, "ray_edgeport_requests_total", model="cnn", status="400")
        return text if ok >= 3 and bad >= 1 else None

    text = wait_for(counted, 30, "the request counters")
    assert (
        metric_value(text, "ray_edgeport_request_latency_ms_count", model="cnn", endpoint="infer")
        >= 4
    )
    assert metric_value(text, "ray_edgeport_batch_size_count", model="cnn") >= 3
    assert metric_value(
        text, "ray_edgeport_batch_size_bucket", model="cnn", le="1.0"
    ) < metric_value(
        text, "ray_edgeport_batch_size_bucket", model="cnn", le="2.0"
    )  # the 2-sample requests


def test_cli_serve_joins_the_cluster_and_stops_on_ctrl_c(
    served: Served, model_paths: dict[str, Path]
) -> None:
    import ray

    address = ray.get_runtime_context().gcs_address
    argv = [sys.executable, "-m", "edgeport.runtime.cli", "serve", str(model_paths["tokens"])]
    argv += ["--name", "cli-tokens", "--ray-address", address, "--max-batch", "1"]
    argv += ["--port", str(served.settings.port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = served.model_url("cli-tokens")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_for(lambda: any("serving" in s for s in lines) or proc.poll() is not None, 120, "up")
        assert proc.poll() is None, "".join(lines)
        assert f"serving cli-tokens at {url}\n" in lines
        feeds = {"ids": np.array([[1, 2]]), "mask": np.array([[True, False]])}
        status, _, body = http(url + "/infer", *encode_infer_request(feeds, binary=False))
        assert status == 200 and json.loads(body)["outputs"][1]["data"] == [1]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=30)
    assert proc.returncode == 0, "".join(lines)
    status, _, body = http(url)  # its application is gone, the others stay
    assert status == 404 and "unknown model 'cli-tokens'" in error_of(body)
    assert http(served.model_url("tokens"))[0] == 200
