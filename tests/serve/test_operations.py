"""``edgeport serve`` under load and failure, on the session's real Ray cluster: Serve's
backpressure answers 503 instead of hanging, a killed replica is replaced and every request is
answered, the Prometheus metrics are readable, the load-test client measures the served model,
the command joins a running cluster and stops cleanly, and without Ray it names the extra."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rtmodels as rt
from serve_helpers import error_of, free_port, http, wait_for

from edgeport.runtime.cli import main
from edgeport.runtime.serve.launch import Served
from edgeport.runtime.serve.protocol import encode_infer_request
from edgeport.runtime.tools.loadtest import LoadTestSettings, load_test, loadtest_markdown

SLOW_BODY = encode_infer_request({"x": np.ones((1, 512, 512), np.float32)}, binary=True)


def _post_all(url: str, bodies: list[tuple[bytes, dict[str, str]]], threads: int) -> list[int]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda b: http(url, *b)[0], bodies))


def test_overload_is_answered_503_not_queued_forever(served: Served) -> None:
    url = served.model_url("slow") + "/infer"
    started = time.monotonic()
    statuses = _post_all(url, [SLOW_BODY] * 16, threads=16)
    assert len(statuses) == 16 and set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 8 and statuses.count(200) >= 1, statuses
    assert time.monotonic() - started < 60
    status, _, body = http(url, *SLOW_BODY)  # and it serves again afterwards
    assert status == 200, body


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


@pytest.mark.slow
def test_a_killed_replica_is_replaced_and_every_request_answered(served: Served) -> None:
    import ray

    app = "edgeport-model-gemm"
    before = _replicas(app)
    assert len(before) == 2
    url = served.model_url("gemm") + "/infer"
    results: list[tuple[int, bytes]] = []

    def client(index: int) -> None:
        for i in range(30):
            batch = rt.integer_batch(1, seed=index * 100 + i)
            status, _, body = http(url, *encode_infer_request({"input": batch}, binary=False))
            results.append((status, body))
            if status == 200:
                logits = json.loads(body)["outputs"][0]["data"]
                assert logits == rt.gemm_reference(batch).ravel().tolist()
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
    assert set(statuses) <= {200, 500, 503}, statuses
    assert statuses.count(200) >= 4 * 30 - 8, statuses  # only those in flight on the victim
    wait_for(
        lambda: _running_replicas(app) == 2 and victim not in _replicas(app), 60, "a new replica"
    )
    assert http(url, *encode_infer_request({"input": rt.integer_batch(1)}))[0] == 200


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_are_exported_on_rays_metrics_port(served: Served) -> None:
    assert served.metrics_url is not None and served.metrics_url.startswith("http://127.0.0.1:")
    url = served.model_url("cnn") + "/infer"
    body = encode_infer_request({"input": np.zeros((2, 3, 32, 32), np.float32)})
    for _ in range(3):
        assert http(url, *body)[0] == 200
    assert http(url, b"{", {"content-type": "application/json"})[0] == 400

    def counted() -> str | None:
        text = _scrape(served.metrics_url)  # type: ignore[arg-type]
        ok = _value(text, "ray_edgeport_requests_total", model="cnn", status="200")
        bad = _value(text, "ray_edgeport_requests_total", model="cnn", status="400")
        return text if ok >= 3 and bad >= 1 else None

    text = wait_for(counted, 30, "the request counters")
    assert _value(text, "ray_edgeport_request_latency_ms_count", model="cnn", endpoint="infer") >= 4
    assert _value(text, "ray_edgeport_batch_size_count", model="cnn") >= 3
    assert _value(text, "ray_edgeport_batch_size_bucket", model="cnn", le="1.0") < _value(
        text, "ray_edgeport_batch_size_bucket", model="cnn", le="2.0"
    )  # the 2-sample requests


def test_load_test_client_measures_the_served_model(served: Served) -> None:
    settings = LoadTestSettings(
        url=served.model_url("cnn"), qps=40, duration_s=2.0, latency_bound_ms=2000
    )
    result = load_test(settings)
    (point,) = result.points
    assert point.sent > 40 and point.ok == point.sent and not point.errors
    assert point.latency_ms is not None and point.latency_ms.p50 > 0
    assert 20 < point.achieved_qps < 80 and point.passed is True
    assert result.best_qps == 40
    assert "| 40.0 |" in loadtest_markdown(result)


def test_bench_url_sweeps_and_writes_json(served: Served, tmp_path: Path) -> None:
    out, md = tmp_path / "load.json", tmp_path / "load.md"
    argv = ["bench", "--url", served.model_url("tokens"), "--qps-sweep", "10:30:20"]
    argv += ["--duration-s", "1", "--latency-bound-ms", "5000", "--shapes", "ids:2x5,mask:2x5"]
    argv += ["--value-range", "ids:0,9", "--json", str(out), "--markdown", str(md)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["schema"] == "edgeport.loadtest"
    assert [p["target_qps"] for p in data["points"]] == [10.0, 30.0]
    assert all(p["errors"] == {} and p["passed"] for p in data["points"])
    assert data["best_qps"] == 30.0 and data["model"]["name"] == "tokens"
    assert "Highest QPS with p99 <= 5000 ms: 30.0" in md.read_text()


def test_bench_url_refuses_a_model_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(tmp_path), "--url", "http://127.0.0.1:1/v2/models/x"]) == 1
    assert "not both" in capsys.readouterr().err


@pytest.mark.slow
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


def test_serve_without_ray_names_the_extra(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.modules['ray'] = None; sys.modules['ray.serve'] = None\n"
        "from edgeport.runtime.cli import main\n"
        f"sys.exit(main(['serve', {str(tmp_path)!r}, '--port', '{free_port()}']))"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'edgeport-runtime[serve]'" in done.stderr
    assert "Traceback" not in done.stderr
