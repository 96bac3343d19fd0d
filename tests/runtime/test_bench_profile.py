"""``edgeport bench --profile``: per-layer times from ONNX Runtime's profiler on a real session,
the trace parser on known events, and the TensorRT layer profiler (on a GPU)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import rt_engines
import rt_graphs
from _env import tensorrt_module_name

from edgeport.runtime.backends.onnxrt import OrtSettings
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.tools.profile import (
    ProfileConfig,
    aggregate,
    layer_recorder,
    parse_ort_trace,
    profile_onnxruntime,
    profile_tensorrt,
)
from edgeport.runtime.tools.report import validate_bench_dict


def test_cli_profile_of_a_small_cnn(cnn_onnx: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", str(cnn_onnx), "--batch", "2", "--warmup-s", "0", "--iterations", "5"]
    args += ["--backend", "onnxruntime-cpu"]
    args += ["--profile", "--profile-runs", "8", "--profile-top", "3", "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert validate_bench_dict(data) == []
    (row,) = data["rows"]
    (profile,) = data["profiles"]
    assert (profile["backend"], profile["batch"]) == ("onnxruntime-cpu", 2)
    assert profile["shapes"] == row["shapes"] == {"input": [2, 3, 32, 32]}
    assert profile["runs"] == 8 and profile["warmup_runs"] == 5
    layers, ops = profile["layers"], profile["ops"]
    assert sum(x["share"] for x in layers) == pytest.approx(1.0)
    assert sum(o["share"] for o in ops) == pytest.approx(1.0)
    assert sum(o["layers"] for o in ops) == len(layers)
    assert {"Conv", "Gemm", "MaxPool"} <= {o["op"] for o in ops}
    assert all(x["calls"] == 1 and x["provider"] == "CPUExecutionProvider" for x in layers)
    means = [x["mean_us"] for x in layers]
    assert means == sorted(means, reverse=True) and means[-1] >= 0
    assert 0 < profile["layer_total_us"] <= profile["run_mean_us"]
    text = capsys.readouterr().out
    assert "Where the time goes, per layer" in text and "ORT_ENABLE_ALL" in text
    assert "| layer | op | mean us | share |" in text and "| op type | layers |" in text
    assert f"| ({len(layers) - 3} more) |" in text  # --profile-top 3


def _node(name: str, ts: float, dur: float, op: str = "Conv") -> dict[str, object]:
    return {
        "cat": "Node",
        "name": f"{name}_kernel_time",
        "ts": ts,
        "dur": dur,
        "args": {"op_name": op, "provider": "CPUExecutionProvider"},
    }


def test_trace_parser_drops_warm_up_runs_and_sums_per_node() -> None:
    events: list[dict[str, object]] = []
    for run, start in enumerate((0, 100, 200)):
        events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": 50})
        slow = 1000 if run == 0 else 30  # the warm-up run is slow and must not count
        events += [_node("conv", start + 1, slow), _node("fc", start + 40, 10, "Gemm")]
        events.append(_node("fc", start + 45, 10, "Gemm"))  # twice per run (a loop)
    events.append({"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 5})
    events.append({"cat": "Node", "name": "conv_fence_before", "ts": 150, "dur": 0})
    prof = parse_ort_trace(events, warmup_runs=1)
    assert prof.runs == 2 and prof.run_mean_us == 50
    conv, fc = prof.layers
    assert (conv.name, conv.mean_us, conv.share, conv.calls) == ("conv", 30, 0.6, 1)
    assert (fc.name, fc.op, fc.mean_us, fc.share, fc.calls) == ("fc", "Gemm", 20, 0.4, 2)
    assert [(o.op, o.layers, o.mean_us) for o in prof.ops()] == [("Conv", 1, 30), ("Gemm", 1, 20)]
    with pytest.raises(InputError, match="none after the 3 warm-up runs"):
        parse_ort_trace(events, warmup_runs=3)


def test_aggregate_and_profile_settings() -> None:
    layers = aggregate({"a": [1.0, 3.0], "b": [6.0, 6.0]}, {"a": "Conv"}, runs=2)
    assert [(x.name, x.op, x.mean_us, x.share) for x in layers] == [
        ("b", "unknown", 6.0, 0.75),
        ("a", "Conv", 2.0, 0.25),
    ]
    with pytest.raises(InputError, match="at least one run"):
        aggregate({}, {}, runs=0)
    with pytest.raises(ConfigError, match="runs >= 1"):
        ProfileConfig(runs=0)


def test_profile_session_is_opened_like_the_runtime(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.conv_model(), tmp_path / "conv.onnx")
    batch = rt_graphs.integer_batch(3, (1, 3, 3))
    prof = profile_onnxruntime(
        path, "onnxruntime-cpu", [batch], ProfileConfig(warmup_runs=1, runs=4), OrtSettings(1)
    )
    assert prof.runs == 4 and prof.layers
    assert sum(x.share for x in prof.layers) == pytest.approx(1.0)
    assert not list(tmp_path.glob("*.json"))  # the trace went to a temporary folder


@pytest.mark.tensorrt
def test_layer_recorder_is_a_tensorrt_profiler() -> None:
    trt = importlib.import_module(str(tensorrt_module_name()))
    recorder = layer_recorder(trt)
    assert isinstance(recorder, trt.IProfiler)
    recorder.report_layer_time("conv", 0.5)
    recorder.report_layer_time("conv", 0.25)
    assert recorder.times == {"conv": [0.5, 0.25]}


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_tensorrt_layer_profile(tmp_path: Path) -> None:
    onnx_path = rt_graphs.save(rt_graphs.small_cnn(), tmp_path / "cnn.onnx")
    engine = tmp_path / "cnn.engine"
    rt_engines.build_engine(onnx_path, engine)
    batch = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    prof = profile_tensorrt(engine, None, [batch], ProfileConfig(warmup_runs=2, runs=5))
    assert prof.runs == 5 and prof.layers
    assert sum(x.share for x in prof.layers) == pytest.approx(1.0)
    assert all(x.mean_us >= 0 for x in prof.layers)
