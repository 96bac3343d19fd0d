"""``edgeport bench loadgen``: MLPerf's own LoadGen (mlcommons-loadgen) drives a real ONNX
Runtime model; --quick runs are cut short, so LoadGen itself says INVALID and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rt_bundles

from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.tools.mlperf_loadgen import (
    LoadGenResult,
    LoadGenSettings,
    parse_summary,
    run_loadgen,
)

pytest.importorskip("mlperf_loadgen")

SINGLE_STREAM_VALID = """\
================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : SingleStream
Mode     : PerformanceOnly
90.0th percentile latency (ns) : 1113928
Result is : VALID
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: Yes
Early Stopping Result:
 * Processed at least 64 queries (902).

================================================
Additional Stats
================================================
QPS w/ loadgen overhead         : 900.15
"""
SERVER_INVALID = """\
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 92.70
Result is : INVALID
  Performance constraints satisfied : Yes
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: NO
Recommendations:
Early Stopping Result:
 * Run unsuccessful.
 * Would need to run at least 365 more queries,
 with the run being successful if every additional
 query were under latency.

================================================
Additional Stats
================================================
Scheduled samples per second : 92.82
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rt_bundles.gemm_bundle(tmp_path_factory.mktemp("lg") / "bundle", ("fp32",))


@pytest.mark.parametrize(
    ("scenario", "metric", "unit"),
    [("single-stream", "90th percentile latency", "ms"), ("offline", "samples per second", "")],
)
def test_quick_run_is_judged_invalid_with_loadgens_reasons(
    bundle: Path, tmp_path: Path, scenario: str, metric: str, unit: str
) -> None:
    settings = LoadGenSettings(scenario=scenario, quick=True, threads=1, batch=4)
    result = run_loadgen(bundle, settings, tmp_path / "loadgen")
    summary = result.summary
    assert summary.metric == metric and summary.value is not None and summary.value > 0
    assert summary.unit == (unit or "samples/s")
    assert summary.valid is False
    assert summary.constraints["Min duration satisfied"] is False
    assert "Min duration satisfied: NO" in summary.reasons
    assert result.test_settings["min_duration_ms"] in (2000, 10_000)  # more than it runs
    assert result.test_settings["max_duration_ms"] == 1000
    for name in ("mlperf_log_summary.txt", "mlperf_log_detail.txt"):
        assert (tmp_path / "loadgen" / name).is_file()
    trace = tmp_path / "loadgen" / "mlperf_log_trace.json"
    assert not trace.exists() or trace.stat().st_size == 0  # switched off
    assert result.model["backend"] == "onnxruntime-cpu" and result.model["calls"] > 0
    assert result.samples["count"] == 64  # synthetic: the gemm bundle stores no reference
    data = json.loads(json.dumps(result.to_dict()))
    assert data["result"] == "INVALID" and data["metric"]["name"] == metric
    assert any("--quick" in n for n in data["notes"])
    assert LoadGenResult.from_dict(data) == result  # what the matrix's --loadgen keep reads
    with pytest.raises(ConfigError, match=r"expected an edgeport\.loadgen schema 1 result"):
        LoadGenResult.from_dict({**data, "schema_version": 2})


def test_loadgen_command_writes_logs_beside_the_json(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "lg.json"
    args = ["bench", "loadgen", str(bundle), "--scenario", "single-stream", "--quick"]
    args += ["--threads", "1", "--backend", "onnxruntime-cpu", "--json", str(out)]
    assert main(args) == 0
    data = json.loads(out.read_text())
    assert data["schema"] == "edgeport.loadgen" and data["scenario"] == "single-stream"
    assert Path(data["logs"]["summary"]) == tmp_path / "out" / "loadgen" / "single-stream" / (
        "mlperf_log_summary.txt"
    )
    assert Path(data["logs"]["summary"]).is_file()


def test_summaries_are_parsed_with_their_own_metric() -> None:
    single = parse_summary(SINGLE_STREAM_VALID)
    assert (single.scenario, single.metric, single.valid) == (
        "SingleStream",
        "90th percentile latency",
        True,
    )
    assert single.value == pytest.approx(1.113928) and single.reasons == ()
    server = parse_summary(SERVER_INVALID)
    assert server.metric == "scheduled samples per second" and server.value == 92.82
    assert server.stats["Completed samples per second"] == 92.70
    assert server.reasons[0] == "Early stopping satisfied: NO"
    assert "Would need to run at least 365 more queries, with the run being successful" in (
        " ".join(server.reasons)
    )
    with pytest.raises(ConfigError, match="not a LoadGen summary"):
        parse_summary("hello")


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="scenario must be one of"):
        LoadGenSettings(scenario="batch")
    with pytest.raises(ConfigError, match="target_qps must be > 0"):
        LoadGenSettings(target_qps=0)
