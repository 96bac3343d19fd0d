"""The check/bench commands as a user runs them, and the benchmark suite's scripts end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeport.runtime.backends.openvino import bf16_unavailable_reason, cpu_capabilities
from edgeport.runtime.tools.report import validate_bench_dict

REPO = Path(__file__).resolve().parents[2]


def edgeport(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeport.runtime.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_edgeport_check_and_bench_commands(exported_bundle: Path, tmp_path: Path) -> None:
    checked = edgeport("check", str(exported_bundle), "--backend", "onnxruntime-cpu")
    assert checked.returncode == 0, checked.stderr
    assert "Verdict: **passed" in checked.stdout
    benched = edgeport(
        "bench",
        str(exported_bundle),
        "--backend",
        "onnxruntime-cpu",
        "--precision",
        "fp32",
        "--batch",
        "1",
        "--warmup-s",
        "0.02",
        "--duration-s",
        "0.05",
        "--json",
        str(tmp_path / "b.json"),
    )
    assert benched.returncode == 0, benched.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    assert validate_bench_dict(data) == []
    assert [r["backend"] for r in data["rows"]] == ["torch", "onnxruntime-cpu"]
    help_text = edgeport("bench", "--help").stdout
    for flag in ("--scenario", "--warmup-s", "--baseline", "--plot", "--cuda-graph", "--shapes"):
        assert flag in help_text


@pytest.mark.slow
def test_run_matrix_quick_on_the_small_cnn(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "run_matrix.py"),
            "--quick",
            "--models",
            "simple_cnn_bn",
            "--epochs",
            "1",
            "--baselines",
            "torch",
            "--warmup-s",
            "0.02",
            "--duration-s",
            "0.05",
            "--cold-runs",
            "1",
            "--loadgen",
            "off",
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Goals" in result.stdout and "CPU precision capabilities" in result.stdout
    for name in ("simple_cnn_bn.json", "simple_cnn_bn.md", "simple_cnn_bn.csv", "latency.png"):
        assert (out / name).is_file(), name
    bench = json.loads((out / "simple_cnn_bn.json").read_text())
    assert validate_bench_dict(bench) == []
    pairs = {(r["backend"], r["precision"]) for r in bench["rows"] if r["backend"] != "auto"}
    bf16 = bf16_unavailable_reason(cpu_capabilities()) is None  # read from this CPU
    assert pairs == {("torch", "fp32"), ("openvino-defaults", "bf16" if bf16 else "fp32")} | {
        (backend, precision)
        for backend in ("bare-onnxruntime", "onnxruntime-cpu", "openvino")
        for precision in ("fp32", "int8")
    } | ({("openvino", "bf16")} if bf16 else set())
    assert {r["batch"] for r in bench["rows"] if r["backend"] == "auto"} == {1, 8}
    matrix = json.loads((out / "matrix.json").read_text())
    (first, *_) = matrix["goals"]
    assert first["model"] == "simple_cnn_bn" and first["ratio"] > 0
    assert [c["batch"] for c in matrix["auto_vs_best_peer"]] == [1, 8]
    assert all(c["ratio"] > 0 for c in matrix["auto_vs_best_peer"])
    head = matrix["auto_vs_best_peer"][0]  # timed head to head, in interleaved rounds
    assert head["rounds"] == 7 and head["auto"].startswith("auto (")
    assert {"bare-onnxruntime fp32", "edgeport openvino fp32"} <= set(head["p50_ms"])
    assert ("edgeport openvino bf16" in head["p50_ms"]) == bf16
    parity = matrix["bf16_parity"]["simple_cnn_bn"]
    assert parity["status"] == ("passed" if bf16 else "not_run"), parity
    assert matrix["cpu_precisions"]["bf16"] == bf16
    rules = matrix["fixed_rule"]  # the rule without a record, against tune's winner
    assert [c["batch"] for c in rules] == [1, 8] and all(c["rule_ratio"] >= 1 for c in rules)
    assert rules[0]["rule"] == ("openvino bf16" if bf16 else "onnxruntime-cpu fp32")
    assert (out / "simple_cnn_bn.tuning.json").is_file()
    assert [c["batch"] for c in matrix["auto_vs_best_peer_sequential"]] == [1, 8]
    cold = json.loads((out / "simple_cnn_bn.coldstart.json").read_text())
    assert {r["subject"] for r in cold["rows"]} >= {"auto", "bare-onnxruntime"}
    check = json.loads((out / "simple_cnn_bn.check.json").read_text())
    artifacts = {c["artifact"] for c in check["checks"]}
    assert artifacts >= {"onnx-fp32", "onnx-int8", "onnx-bf16"}
    compared = {c["artifact"] for c in check["checks"] if c["status"] in ("passed", "failed")}
    assert compared >= {"onnx-fp32", "onnx-int8"}  # the OpenVINO int8 file is OpenVINO's only
    readme = (out / "README.md").read_text()
    for heading in ("## Goals", "## edgeport auto against the best peer", "## Cold start"):
        assert heading in readme


@pytest.mark.slow
def test_gpu_script_dry_run_exercises_everything_but_cuda(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        "SITE": str(tmp_path / "site"),
    }
    result = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu" / "run.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    res = tmp_path / "out" / "dry-run-cpu"
    names = sorted(p.name for p in res.iterdir())
    assert names == [
        "env.json",
        "gpu.csv",
        "gpu.json",
        "gpu.md",
        "gpu.png",
        "pytest.log",
        "run.log",
    ]
    data = json.loads((res / "gpu.json").read_text())
    bench = data["models"]["simple_cnn_bn"]["bench"]
    assert validate_bench_dict(bench) == []
    assert {r["precision"] for r in bench["rows"]} == {"fp32", "fp16"}
    assert all(r["parity"]["top1_agreement"] is not None for r in bench["rows"])
    assert "edgeport.baselines ['torch', 'torch-compile']" in result.stdout
