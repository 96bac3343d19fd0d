"""Triton's load generator, perf_analyzer, runs against the one-process server unpatched, over
HTTP and gRPC: it reads the model's metadata and configuration, then measures. Skipped where
``make perf-analyzer`` could not unpack it (it ships for Linux x86_64 only)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from serve_helpers import ThreadedServer

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("EDGEPORT_PERF_ANALYZER", REPO / ".cache/perf_analyzer/perf_analyzer"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BINARY.is_file(),
        reason=f"perf_analyzer is not set up at {BINARY}: `make perf-analyzer` unpacks it from "
        "the tritonclient wheel (Linux x86_64, with libb64 from apt and the CUDA runtime wheel)",
    ),
]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_measures_the_server(server: ThreadedServer, protocol: str) -> None:
    address = server.settings.grpc_address if protocol == "grpc" else server.url[7:]
    argv = [str(BINARY), "-m", "gemm", "-u", address, "-i", protocol, "--input-data", "zero"]
    argv += ["--concurrency-range", "4", "-p", "1000", "--max-trials", "3", "-s", "1000"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", done.stdout)
    assert throughput is not None and float(throughput.group(1)) > 10, done.stdout
    assert "p99 latency" in done.stdout
