"""``edgeport bench cold-start``: real fresh processes (edgeport and bare ONNX Runtime) on a tiny
ONNX file; the fields, not the speed, are checked (speed goals are printed by benchmarks)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import rt_graphs

from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.tools.coldstart import (
    PARTS,
    ColdStartSettings,
    cold_start,
    coldstart_markdown,
    run_process,
)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rt_graphs.save(rt_graphs.gemm_model(), tmp_path_factory.mktemp("cold") / "gemm.onnx")


def test_cold_start_times_whole_processes_of_edgeport_and_bare_onnxruntime(
    tiny_onnx: Path,
) -> None:
    settings = ColdStartSettings(
        runs=2, subjects=("auto", "onnxruntime-cpu", "bare-onnxruntime"), threads=1
    )
    result = cold_start(tiny_onnx, settings)
    assert result.precision == "fp32" and Path(result.file) == tiny_onnx
    assert len(result.processes) == 2 * 3 * 2  # runs x subjects x (cold, warm)
    assert all(p.error is None for p in result.processes), result.notes
    rows = {(r.subject, r.state): r for r in result.rows}
    assert set(rows) == {(s, t) for s in settings.subjects for t in ("cold", "warm")}
    for row in result.rows:
        assert row.runs == 2 and row.failed == 0
        assert 0 < row.total_min_s <= row.total_s <= row.total_max_s
        assert set(row.parts) == set(PARTS) and all(v >= 0 for v in row.parts.values())
        assert sum(row.parts.values()) <= row.total_max_s * 1.01  # the parts fit in the whole
        assert row.rss_after_load_mib is not None and row.rss_after_load_mib > 10
        assert row.peak_rss_mib is not None and row.peak_rss_mib >= row.rss_after_load_mib
        assert row.cpu_s is not None and row.cpu_s > 0
        assert row.vs_bare_onnxruntime is not None and row.vs_bare_onnxruntime > 0
    assert rows[("auto", "warm")].chosen == ("onnxruntime-cpu", "fp32", "gemm.onnx")
    assert rows[("bare-onnxruntime", "cold")].chosen is None
    assert rows[("bare-onnxruntime", "warm")].vs_bare_onnxruntime == pytest.approx(1.0)
    assert rows[("auto", "cold")].vs_bare_engine == rows[("auto", "cold")].vs_bare_onnxruntime
    assert result.goal("warm") == rows[("auto", "warm")].vs_bare_onnxruntime
    data = json.loads(json.dumps(result.to_dict()))
    assert data["schema"] == "edgeport.coldstart" and data["goal"]["target"] == 1.3
    assert {"total_s", "cpu_s", "parts", "rss_after_load_mib", "peak_rss_mib"} <= set(
        data["rows"][0]
    )
    text = coldstart_markdown(result)
    assert "| auto (onnxruntime-cpu fp32) | cold | 2 |" in text
    assert "Goal (warm): auto's whole process / bare ONNX Runtime's" in text


def test_cold_start_command_writes_json_and_markdown(tiny_onnx: Path, tmp_path: Path) -> None:
    paths = {"json": tmp_path / "cold.json", "markdown": tmp_path / "cold.md"}
    code = main(
        [
            "bench",
            "cold-start",
            str(tiny_onnx),
            "--runs",
            "1",
            "--backend",
            "auto,bare-onnxruntime",
            "--threads",
            "1",
            "--json",
            str(paths["json"]),
            "--markdown",
            str(paths["markdown"]),
        ]
    )
    assert code == 0
    data = json.loads(paths["json"].read_text())
    assert [(r["subject"], r["state"]) for r in data["rows"]] == [
        ("auto", "cold"),
        ("bare-onnxruntime", "cold"),
        ("auto", "warm"),
        ("bare-onnxruntime", "warm"),
    ]
    assert data["settings"]["threads"] == 1 and data["settings"]["runs"] == 1
    assert "Cold start: gemm.onnx" in paths["markdown"].read_text()


def test_cold_start_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown subjects"):
        ColdStartSettings(subjects=("tensorflow",))
    with pytest.raises(ConfigError, match="runs must be >= 1"):
        ColdStartSettings(runs=0)
    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        ColdStartSettings(timeout_s=0)


def test_a_process_past_its_timeout_is_killed_and_reported(tmp_path: Path) -> None:
    settings = ColdStartSettings(timeout_s=0.5)
    started = time.monotonic()
    proc = run_process("auto", "cold", "import time; time.sleep(60)", tmp_path, settings)
    assert proc.error == "timed out" and proc.total_s == 0.5
    assert time.monotonic() - started < 30  # killed, not waited for
