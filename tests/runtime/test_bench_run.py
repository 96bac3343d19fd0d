"""``edgeport bench`` for real on the exported bundle, with tiny durations (not a timing test)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.tools.bench import BenchSettings, TimingConfig, benchmark
from edgeport.runtime.tools.bench_result import CSV_COLUMNS, BenchResult
from edgeport.runtime.tools.report import validate_bench_dict

TINY = ["--warmup-s", "0.02", "--duration-s", "0.05", "--threads", "1"]


def test_cli_bench_writes_valid_json_csv_markdown_and_plot(
    exported_bundle: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("matplotlib")
    paths = {k: tmp_path / f"bench.{k}" for k in ("json", "csv", "md", "png")}
    code = main(
        [
            "bench",
            str(exported_bundle),
            "--backend",
            "onnxruntime-cpu",
            "--precision",
            "fp32,int8",
            "--batch",
            "1,4",
            *TINY,
            "--json",
            str(paths["json"]),
            "--csv",
            str(paths["csv"]),
            "--markdown",
            str(paths["md"]),
            "--plot",
            str(paths["png"]),
        ]
    )
    assert code == 0
    data = json.loads(paths["json"].read_text())
    assert validate_bench_dict(data) == []
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in data["rows"]}
    expected = {
        (backend, precision, batch)
        for backend, precision in (
            ("torch", "fp32"),
            ("onnxruntime-cpu", "fp32"),
            ("onnxruntime-cpu", "int8"),
        )
        for batch in (1, 4)
    }
    assert set(rows) == expected
    for row in data["rows"]:
        assert row["iterations"] >= 10  # min_iterations, whatever the duration
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert row["samples_per_s"] == pytest.approx(row["batch"] * 1000 / lat["mean"])
        assert row["shapes"] == {"input": [row["batch"], 1, 32, 32]}
        assert row["speedup_vs_eager"] > 0  # eager ran, so every row has a ratio
        assert row["timer"] == "perf_counter_ns" and row["stages_ms"] is None
    assert rows[("torch", "fp32", 1)]["speedup_vs_eager"] == pytest.approx(1.0)
    assert rows[("onnxruntime-cpu", "fp32", 1)]["parity"]["top1_agreement"] == 1.0
    assert rows[("onnxruntime-cpu", "fp32", 1)]["parity"]["max_abs"] <= 1e-4
    assert rows[("onnxruntime-cpu", "fp32", 1)]["parity"]["passed"] is True
    assert data["parity"]["reference"].startswith("the bundle's stored reference outputs")
    assert data["config"]["threads"] == 1 and data["config"]["batches"] == [1, 4]
    assert data["model"]["name"] == "simple_cnn_bn" and data["model"]["kind"] == "bundle"
    assert data["model"]["inputs"][0]["name"] == "input"
    assert data["environment"]["cpu"]["model"]
    assert {s["backend"] for s in data["summary"]["single_stream"]} == {"torch", "onnxruntime-cpu"}
    lines = list(csv.DictReader(paths["csv"].open()))
    assert len(lines) == len(data["rows"]) and tuple(lines[0]) == CSV_COLUMNS
    markdown = paths["md"].read_text()
    assert "| backend | precision | device | batch | p50 ms |" in markdown
    assert "speed-up vs eager" in markdown
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert "| onnxruntime-cpu | int8 | cpu | 4 |" in capsys.readouterr().out
    assert BenchResult.from_dict(data).find("onnxruntime-cpu", "int8", 4) is not None


def test_single_stream_with_a_fixed_count(exported_bundle: Path) -> None:
    settings = BenchSettings(
        backends=("onnxruntime-cpu",),
        precisions=("fp32",),
        batches=(1, 8, 32),
        scenario="single-stream",
        timing=TimingConfig(warmup_s=0.0, iterations=7),
        threads=1,
        baselines=(),
    )
    result = benchmark(exported_bundle, settings)
    assert [(r.backend, r.batch, r.latency.count) for r in result.rows] == [
        ("onnxruntime-cpu", 1, 7)
    ]
    assert result.rows[0].speedup_vs_eager is None  # no eager baseline asked for
    summary = result.to_dict()["summary"]
    assert set(summary) == {"single_stream"}
    assert summary["single_stream"][0]["p90_ms"] == pytest.approx(result.rows[0].latency.p90)


def test_unavailable_backends_are_listed_with_reasons(exported_bundle: Path) -> None:
    from edgeport.runtime.backends.cuda import probe_gpus

    if probe_gpus().reason is None:
        pytest.skip("this machine has a GPU")
    settings = BenchSettings(
        backends=("onnxruntime-cuda",),
        precisions=("fp32",),
        batches=(1,),
        timing=TimingConfig(warmup_s=0.0, iterations=2),
        baselines=(),
    )
    result = benchmark(exported_bundle, settings)
    assert result.rows == []
    (skip,) = result.skipped
    assert skip.backend == "onnxruntime-cuda" and skip.precision == "fp32"
    assert "CUDAExecutionProvider" in skip.reason or "GPU" in skip.reason


def test_bench_setting_errors(exported_bundle: Path) -> None:
    with pytest.raises(ConfigError, match="unknown scenario"):
        BenchSettings(scenario="server")
    with pytest.raises(ConfigError, match=r"unknown backends \['onnxruntime'\]"):
        BenchSettings(backends=("onnxruntime",))
    with pytest.raises(ConfigError, match=r"unknown baselines \['tf'\]"):
        BenchSettings(baselines=("tf",))
    with pytest.raises(ConfigError, match="either images or inputs='synthetic'"):
        BenchSettings(images=("a.png",), inputs="synthetic")
    with pytest.raises(ConfigError, match="value ranges shape synthetic inputs"):
        BenchSettings(inputs="reference", value_ranges={"ids": (0, 9)})
    with pytest.raises(ConfigError, match=r"unknown precisions \['fp64'\]"):
        BenchSettings(precisions=("fp64",))
    assert main(["bench", str(exported_bundle), "--batch", "0"]) == 1


def test_bench_modes_have_their_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "modes (edgeport bench MODE --help):" in text and "  cold-start  " in text
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "loadgen", "--help"])
    assert "usage: edgeport bench loadgen" in capsys.readouterr().out
    for argv in (["bench", "m.onnx", "--cold-start"], ["bench", "cold-start", "m.onnx", "--csv"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "loadgen", "m.onnx"])
    assert "the following arguments are required: --scenario" in capsys.readouterr().err
