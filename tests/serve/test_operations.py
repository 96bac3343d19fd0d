"""The one-process ``edgeport serve`` under load: a full queue answers 503 at once, a 60 MB JSON
body neither stalls other clients nor is refused, one beyond what a model's inputs can need is
refused before it is read, the Prometheus metrics count what happened, the load-test client
measures the served model, and without Ray ``--ray`` names the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import ThreadedServer, free_port, http, metric_value, scrape

from edgeport.runtime.cli import main
from edgeport.runtime.serve.protocol import encode_infer_request
from edgeport.runtime.tools.server_loadtest import LoadTestSettings, load_test, loadtest_markdown

SLOW_BODY = encode_infer_request({"x": np.ones((1, 512, 512), np.float32)}, binary=True)


def _post_all(url: str, bodies: list[tuple[bytes, dict[str, str]]], threads: int) -> list[int]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda b: http(url, *b)[0], bodies))


def test_overload_is_answered_503_not_queued_forever(server: ThreadedServer) -> None:
    url = server.model_url("slow") + "/infer"
    started = time.monotonic()
    statuses = _post_all(url, [SLOW_BODY] * 16, threads=16)
    assert len(statuses) == 16 and set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 8 and statuses.count(200) >= 1, statuses
    assert time.monotonic() - started < 30
    status, _, body = http(url, *SLOW_BODY)  # and it serves again afterwards
    assert status == 200, body


def test_metrics_are_served_at_slash_metrics(server: ThreadedServer) -> None:
    url = server.model_url("cnn") + "/infer"
    body = encode_infer_request({"input": np.zeros((2, 3, 32, 32), np.float32)})
    for _ in range(3):
        assert http(url, *body)[0] == 200
    assert http(url, b"{", {"content-type": "application/json"})[0] == 400
    text = scrape(server.url + "/metrics")
    assert metric_value(text, "edgeport_requests_total", model="cnn", status="200") >= 3
    assert metric_value(text, "edgeport_requests_total", model="cnn", status="400") >= 1
    assert (
        metric_value(text, "edgeport_request_latency_ms_count", model="cnn", endpoint="infer") >= 4
    )
    assert metric_value(text, "edgeport_batch_size_count", model="cnn") >= 3
    assert metric_value(text, "edgeport_batch_size_bucket", model="cnn", le="1.0") < metric_value(
        text, "edgeport_batch_size_bucket", model="cnn", le="2.0"
    )  # the 2-sample requests
    assert "edgeport_queue_waiting{" in text


def test_load_test_client_measures_the_served_model(server: ThreadedServer) -> None:
    settings = LoadTestSettings(
        url=server.model_url("cnn"), qps=40, duration_s=2.0, latency_bound_ms=2000
    )
    result = load_test(settings)
    (point,) = result.points
    assert point.sent > 40 and point.ok == point.sent and not point.errors
    assert point.latency_ms is not None and point.latency_ms.p50 > 0
    assert 20 < point.achieved_qps < 80 and point.passed is True
    assert result.best_qps == 40
    assert "| 40.0 |" in loadtest_markdown(result)


def test_loadtest_sweeps_and_writes_json(server: ThreadedServer, tmp_path: Path) -> None:
    out, md = tmp_path / "load.json", tmp_path / "load.md"
    argv = ["loadtest", server.model_url("tokens"), "--qps-sweep", "10:30:20"]
    argv += ["--duration-s", "1", "--latency-bound-ms", "5000", "--shapes", "ids:2x5,mask:2x5"]
    argv += ["--value-range", "ids:0,9", "--json", str(out), "--markdown", str(md)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["schema"] == "edgeport.loadtest"
    assert [p["target_qps"] for p in data["points"]] == [10.0, 30.0]
    assert all(p["errors"] == {} and p["passed"] for p in data["points"])
    assert data["best_qps"] == 30.0 and data["model"]["name"] == "tokens"
    assert "Highest QPS with p99 <= 5000 ms: 30.0" in md.read_text()


def test_loadtest_refuses_a_model_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", str(tmp_path), "--qps", "1"]) == 1
    assert "url must be http://HOST:PORT/v2/models/NAME" in capsys.readouterr().err


def test_serve_without_ray_names_the_extra(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.modules['ray'] = None; sys.modules['ray.serve'] = None\n"
        "from edgeport.runtime.cli import main\n"
        f"sys.exit(main(['serve', {str(tmp_path)!r}, '--ray', '--port', '{free_port()}']))"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'edgeport-runtime[serve]'" in done.stderr
    assert "Traceback" not in done.stderr


def _wide_json(values: int) -> bytes:
    data = b"[[" + b"0.25, " * (values - 1) + b"0.25]]"
    head = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, %d], "data": ' % values
    return head + data + b"}]}"


def test_a_60_mb_json_body_does_not_stall_other_clients(server: ThreadedServer) -> None:
    """The body is decoded in a thread of its own, in chunks, while another client's requests
    keep their latency."""
    body = _wide_json(10_000_000)
    assert 60e6 < len(body) < 64 * 2**20
    small = encode_infer_request({"input": np.zeros((1, 3, 32, 32), np.float32)})
    latencies: list[float] = []
    done = threading.Event()

    def other_client() -> None:
        while not done.is_set():
            started = time.perf_counter()
            assert http(server.model_url("cnn") + "/infer", *small)[0] == 200
            latencies.append(time.perf_counter() - started)
            time.sleep(0.01)

    worker = threading.Thread(target=other_client)
    worker.start()
    try:
        time.sleep(0.2)
        status, _, answer = http(
            server.model_url("wide") + "/infer", body, {"content-type": "application/json"}
        )
        time.sleep(0.2)
    finally:
        done.set()
        worker.join(timeout=60)
    assert status == 200, answer[:300]
    assert json.loads(answer)["outputs"][0]["data"] == [2.5e6]
    p99 = float(np.percentile(latencies, 99))
    assert len(latencies) > 10 and p99 < 1.0, (p99, max(latencies), len(latencies))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_loadtest_closed_loop_over_each_protocol(
    server: ThreadedServer, protocol: str, tmp_path: Path
) -> None:
    address = server.settings.grpc_address if protocol == "grpc" else server.url[7:]
    out = tmp_path / "load.json"
    argv = ["loadtest", f"http://{address}/v2/models/cnn", "--protocol", protocol]
    argv += ["--concurrency", "1,4", "--duration-s", "0.5", "--json", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["config"]["protocol"] == protocol
    assert [p["concurrency"] for p in data["points"]] == [1, 4]
    assert all(p["errors"] == {} and p["ok"] > 10 for p in data["points"])
    assert data["model"]["inputs"][0]["shape"] == [-1, 3, 32, 32]


def test_bench_url_counts_grpc_refusals(server: ThreadedServer) -> None:
    settings = LoadTestSettings(
        url=f"grpc://{server.settings.grpc_address}/v2/models/slow", concurrency=(16,),
        duration_s=1.0, warmup_requests=1,
    )  # fmt: skip
    (point,) = load_test(settings).points
    assert point.ok >= 1 and point.errors.get("UNAVAILABLE", 0) >= 1, point


def test_serve_without_its_libraries_names_the_extra(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.modules['grpc'] = None\n"
        "from edgeport.runtime.cli import main\n"
        f"sys.exit(main(['serve', {str(tmp_path)!r}, '--port', '{free_port()}']))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "pip install 'edgeport-runtime[serve]'" in done.stderr
    assert "Traceback" not in done.stderr
