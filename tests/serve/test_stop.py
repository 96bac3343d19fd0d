"""``edgeport serve`` started as a user starts it stops cleanly: SIGINT to its process group
(Ctrl-C in a terminal) or SIGTERM to its process (``kill``, a service manager) while requests
are in flight answers every one of them, leaves no process of its tree behind within 15 s and
exits 0, in one process and on the Ray cluster it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import alive, descendants, free_port, http, kill_tree, wait_for

from edgeport.runtime.serve.protocol import encode_infer_request

IN_FLIGHT = 8
BODY = encode_infer_request({"x": np.ones((8, 512, 512), np.float32)})  # 8 GFLOP each


def _stop_while_busy(argv: list[str], signum: int, to_group: bool, start_s: float) -> None:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    tree: set[int] = set()
    try:
        up = lambda: any("serving" in s for s in lines) or proc.poll() is not None  # noqa: E731
        wait_for(up, start_s, "the server")
        assert proc.poll() is None, "".join(lines)
        url = next(s.split(" at ")[1].strip() for s in lines if s.startswith("serving"))
        tree = descendants(proc.pid) | {proc.pid}
        answered: list[int] = []
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [
                pool.submit(lambda: answered.append(http(url + "/infer", *BODY)[0]) or 0)
                for _ in range(IN_FLIGHT)
            ]
            wait_for(lambda: answered, 60, "a first answer")  # the others are in flight
            in_flight = IN_FLIGHT - len(answered)
            if to_group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
            signalled = time.monotonic()
            for future in futures:
                future.result(timeout=30)
        proc.wait(timeout=15)
        tree |= descendants(proc.pid)
        wait_for(lambda: not any(alive(p) for p in tree), 15 - (time.monotonic() - signalled), "")
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_tree(tree)
    assert in_flight >= 2, "the signal came after the requests were answered"
    assert answered == [200] * IN_FLIGHT, (answered, "".join(lines))
    assert proc.returncode == 0, "".join(lines)
    assert "Traceback" not in "".join(lines)


def _argv(model: Path, *extra: str) -> list[str]:
    argv = [sys.executable, "-m", "edgeport.runtime.cli", "serve", str(model), "--name", "slow"]
    return [*argv, "--threads", "1", "--max-batch", "1", "--port", str(free_port()), *extra]


@pytest.mark.parametrize(
    ("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["int", "term"]
)
def test_one_process_stops_cleanly(
    model_paths: dict[str, Path], signum: int, to_group: bool
) -> None:
    argv = _argv(model_paths["slow"], "--grpc-port", str(free_port()))
    _stop_while_busy(argv, signum, to_group, start_s=60)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["int", "term"]
)
def test_ray_serve_stops_cleanly_with_its_cluster(
    model_paths: dict[str, Path], signum: int, to_group: bool
) -> None:
    argv = _argv(model_paths["slow"], "--ray", "--num-cpus", "2", "--no-access-log")
    _stop_while_busy(argv, signum, to_group, start_s=120)


def test_a_second_signal_exits_at_once(model_paths: dict[str, Path]) -> None:
    argv = _argv(model_paths["slow"], "--grpc-port", str(free_port()), "--drain-s", "30")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        while first and not first.startswith("serving"):
            first = proc.stdout.readline()  # type: ignore[union-attr]
        url = first.split(" at ")[1].strip()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            for _ in range(IN_FLIGHT):
                pool.submit(http, url + "/infer", *BODY)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
