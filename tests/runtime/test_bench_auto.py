"""The ``auto`` row of ``edgeport bench``: the model as ``load(backend="auto", expected_batch=N)``
opens it, per batch size, labelled with what it chose and why (real ONNX Runtime and OpenVINO)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import rt_bundles

from edgeport.runtime.cli import main
from edgeport.runtime.tools.bench import BenchSettings, TimingConfig, benchmark
from edgeport.runtime.tools.bench_result import BenchResult
from edgeport.runtime.tools.report import bench_markdown, validate_bench_dict
from edgeport.runtime.tools.tune import TuneSettings, tune
from edgeport.runtime.tuning_records import BatchWinner, Timing, save_record

QUICK = TimingConfig(warmup_s=0.0, iterations=3)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEPORT_CACHE_DIR", str(tmp_path / "cache"))  # records of one test


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return rt_bundles.gemm_bundle(tmp_path / "b", ("fp32", "int8"))


def _auto_rows(result: BenchResult) -> dict[int, object]:
    return {r.batch: r for r in result.rows if r.backend == "auto"}


def test_auto_row_follows_the_rule_without_a_record(bundle: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "bench.json"
    args = ["bench", str(bundle), "--backend", "auto,onnxruntime-cpu", "--batch", "1,4"]
    args += ["--threads", "1", "--warmup-s", "0", "--iterations", "3", "--json", str(path)]
    code = main(args)
    assert code == 0
    data = json.loads(path.read_text())
    assert validate_bench_dict(data) == []
    auto = [r for r in data["rows"] if r["backend"] == "auto"]
    assert [r["batch"] for r in auto] == [1, 4]
    for row in auto:
        assert row["kind"] == "edgeport" and row["chosen_backend"] == "onnxruntime-cpu"
        assert row["precision"] == "fp32" and row["artifact"] == "onnx-fp32"
        assert row["choice_basis"].startswith("no tuning record")
        assert row["iterations"] == 3 and row["timer"] == "perf_counter_ns"
    others = [r for r in data["rows"] if r["backend"] != "auto"]
    assert others and all(r["chosen_backend"] is None for r in others)
    out = capsys.readouterr().out
    assert "| auto (onnxruntime-cpu fp32) | fp32 | cpu | 1 |" in out
    assert "- batch 4: auto (onnxruntime-cpu fp32); no tuning record" in out
    again = BenchResult.from_dict(data)
    assert any(r.label == "auto (onnxruntime-cpu fp32)" for r in again.rows)


def test_auto_row_follows_a_tuning_record_per_batch_size(bundle: Path) -> None:
    pytest.importorskip("openvino")
    record, _ = tune(bundle, TuneSettings(batches=(1, 4), threads=1, timing=QUICK))
    fake = Timing("openvino", "int8", "onnx-int8", 0.001, 0.002)  # batch 4: openvino int8
    entries = (record.batches[0], BatchWinner(4, fake, (fake,)))
    save_record(replace(record, batches=entries), bundle)
    settings = BenchSettings(
        backends=("auto",), batches=(1, 4), timing=QUICK, threads=1, baselines=()
    )
    result = benchmark(bundle, settings)
    rows = _auto_rows(result)
    winner = record.batches[0].winner
    assert (rows[1].chosen_backend, rows[1].artifact) == (winner.backend, winner.artifact)
    assert (rows[4].chosen_backend, rows[4].precision) == ("openvino", "int8")
    assert rows[4].label == "auto (openvino int8)"
    assert "at batch 4 the fastest was openvino int8" in (rows[4].choice_basis or "")
    assert {r.backend for r in result.rows} == {"auto"}  # nothing else was asked for
    offline = result.to_dict()["summary"]["offline"]
    assert len(offline) == 1 and offline[0]["chosen_backend"] is not None  # one auto entry
    assert "auto (openvino int8)" in bench_markdown(result)


def test_schema_2_results_still_read(bundle: Path) -> None:
    result = benchmark(
        bundle, BenchSettings(backends=("onnxruntime-cpu",), batches=(1,), timing=QUICK)
    )
    data = result.to_dict()
    data["schema_version"] = 2
    for row in data["rows"]:
        del row["chosen_backend"], row["choice_basis"]
    again = BenchResult.from_dict(data)
    assert again.rows[0].chosen_backend is None and again.rows[0].label.startswith("onnx")
