"""Benchmark/check report writers, the JSON schema, the environment record, lazy imports."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgeport.runtime.envinfo import collect_environment, cpu_counts, gpu_slug, machine_slug
from edgeport.runtime.tools.bench_result import (
    CSV_COLUMNS,
    BenchResult,
    BenchRow,
    ProfiledRow,
    Skipped,
    speedups,
)
from edgeport.runtime.tools.profile import LayerProfile, LayerTime
from edgeport.runtime.tools.report import (
    bench_csv,
    bench_markdown,
    schema_markdown,
    validate_bench_dict,
    write_bench,
)
from edgeport.runtime.tools.timing import LatencyStats


def _stats(p50: float) -> LatencyStats:
    return LatencyStats.from_samples([p50 * 0.9, p50, p50, p50 * 1.1, p50 * 1.5])


def _result() -> BenchResult:
    rows = []
    for backend, precision, scale in (
        ("torch", "fp32", 4.0),
        ("onnxruntime-cpu", "fp32", 1.0),
        ("onnxruntime-cpu", "int8", 0.8),
    ):
        for batch in (1, 8):
            stats = _stats(scale * batch**0.5)
            rows.append(
                BenchRow(
                    backend=backend,
                    kind="baseline" if backend == "torch" else "edgeport",
                    precision=precision,
                    device="cpu",
                    batch=batch,
                    shapes={"input": (batch, 3, 32, 32)},
                    latency=stats,
                    throughput=batch * 1000 / stats.mean,
                    timer="perf_counter_ns",
                    artifact=None if backend == "torch" else f"onnx-{precision}",
                    parity_top1=1.0,
                    parity_max_abs=2e-6,
                )
            )
    rows.append(
        BenchRow(
            backend="onnxruntime-cuda",
            kind="edgeport",
            precision="fp16",
            device="cuda",
            batch=1,
            shapes={"input": (1, 3, 32, 32)},
            latency=_stats(0.2),
            throughput=5000.0,
            timer="cuda-events",
            artifact="onnx-fp16",
            stages={"h2d": _stats(0.02), "compute": _stats(0.15), "d2h": _stats(0.01)},
            warnings=("high variation: CV 30% > 10%",),
        )
    )
    return BenchResult(
        rows=speedups(rows),
        skipped=[Skipped("tensorrt", "fp32", "cuda", "no NVIDIA GPU: libcuda is not installed")],
        config={"scenario": "both", "batches": [1, 8], "warmup_s": 0.1, "duration_s": 0.2},
        environment=collect_environment(threads=2),
        model={"name": "simple_cnn_bn", "kind": "bundle"},
        created="2026-11-28T00:00:00+00:00",
        profiles=[
            ProfiledRow(
                "onnxruntime-cpu",
                "fp32",
                "cpu",
                "onnx-fp32",
                1,
                {"input": (1, 3, 32, 32)},
                LayerProfile(
                    "onnxruntime profiler",
                    runs=10,
                    warmup_runs=2,
                    layers=(
                        LayerTime("conv1", "Conv", 30.0, 0.6, 1),
                        LayerTime("conv2", "Conv", 15.0, 0.3, 1),
                        LayerTime("fc", "Gemm", 5.0, 0.1, 1),
                    ),
                    run_mean_us=55.0,
                ),
            )
        ],
    )


def test_json_matches_the_documented_schema(tmp_path: Path) -> None:
    result = _result()
    (path,) = write_bench(result, json_path=tmp_path / "out" / "bench.json")
    data = json.loads(path.read_text())
    assert validate_bench_dict(data) == []
    assert data["rows"][2]["speedup_vs_eager"] == pytest.approx(4.0)
    assert data["rows"][-1]["stages_ms"]["compute"]["p50"] == pytest.approx(0.15)
    assert data["rows"][0]["shapes"] == {"input": [1, 3, 32, 32]}
    assert data["summary"]["single_stream"][0]["backend"] == "onnxruntime-cuda"
    assert data["profiles"][0]["ops"] == [
        {"op": "Conv", "layers": 2, "mean_us": 45.0, "share": pytest.approx(0.9)},
        {"op": "Gemm", "layers": 1, "mean_us": 5.0, "share": pytest.approx(0.1)},
    ]
    again = BenchResult.from_dict(data)
    assert again.rows == result.rows and again.profiles == result.profiles
    broken = dict(data, rows=[dict(data["rows"][0], batch="1")])
    del broken["environment"]
    broken["profiles"] = [dict(data["profiles"][0], layers=data["profiles"][0]["layers"][:2])]
    problems = validate_bench_dict(broken)
    assert "missing field 'environment'" in problems
    assert "rows[0].batch should be integer" in problems
    assert "profiles[0] layer shares sum to 0.900000, not 1" in problems


def test_csv_has_one_line_per_row(tmp_path: Path) -> None:
    result = _result()
    (path,) = write_bench(result, csv_path=tmp_path / "bench.csv")
    lines = list(csv.DictReader(path.open()))
    assert len(lines) == len(result.rows)
    assert tuple(lines[0].keys()) == CSV_COLUMNS
    cuda = lines[-1]
    assert cuda["backend"] == "onnxruntime-cuda" and cuda["h2d_p50_ms"] != ""
    assert float(lines[2]["speedup_vs_eager"]) == pytest.approx(4.0)
    assert lines[0]["shapes"] == "input:1x3x32x32" and lines[0]["parity_top1"] == "1"
    assert float(lines[0]["samples_per_s"]) == pytest.approx(result.rows[0].throughput, rel=1e-5)
    assert bench_csv(result) == path.read_text()


def test_markdown_has_speedups_scenarios_and_skips() -> None:
    text = bench_markdown(_result())
    assert "| onnxruntime-cpu | int8 | cpu | 1 |" in text
    assert "5.00x" in text  # int8 vs eager at batch 1: 4.0 / 0.8
    assert "H2D ms" in text and "compute ms" in text
    assert "Single-stream (batch 1, p90 latency" in text
    assert "Offline (peak throughput" in text
    assert "- tensorrt on cuda (fp32): no NVIDIA GPU" in text
    assert "high variation" in text
    assert "## Benchmark: simple_cnn_bn (3x32x32)" in text
    assert "| `conv1` | Conv | 30.0 | 60.0% |" in text and "| Conv | 2 | 45.0 | 90.0% |" in text


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    (path,) = write_bench(_result(), plot_path=tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_plot_without_matplotlib_raises_backend_unavailable(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from edgeport.runtime.tools.bench import BenchResult\n"
        "from edgeport.runtime.tools.report import write_plot\n"
        "from edgeport.runtime.errors import BackendUnavailable\n"
        "import json\n"
        f"data = json.load(open({str(tmp_path / 'b.json')!r}))\n"
        "try:\n"
        f"    write_plot([BenchResult.from_dict(data)], {str(tmp_path / 'p.png')!r})\n"
        "except BackendUnavailable as exc:\n"
        "    print('UNAVAILABLE', exc)\n"
    )
    write_bench(_result(), json_path=tmp_path / "b.json")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "UNAVAILABLE --plot needs matplotlib" in out.stdout
    assert not (tmp_path / "p.png").exists()


def test_schema_markdown_lists_every_field_and_the_readme_shows_it() -> None:
    text = schema_markdown()
    for field in ("schema_version", "rows", "shapes", "samples_per_s", "profiles", "parity"):
        assert f"`{field}`" in text
    readme = Path(__file__).resolve().parents[2] / "benchmarks" / "README.md"
    assert text in readme.read_text(encoding="utf-8"), "regenerate the README's schema tables"


def test_environment_record() -> None:
    env = collect_environment(threads=3)
    assert env["threads"]["requested"] == 3
    assert env["cpu"]["model"] and env["cpu"]["logical"] >= 1
    assert env["packages"]["numpy"]
    assert re.fullmatch(r"[a-z0-9-]+-\d+c", env["machine"])
    assert machine_slug() == env["machine"]
    counts = cpu_counts()
    assert 1 <= counts["usable"] <= counts["logical"]
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "gpu-nvidia-h100-80gb-hbm3"


def test_runtime_bench_and_check_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import edgeport.runtime.tools.bench, edgeport.runtime.tools.check\n"
        "import edgeport.runtime.tools.report, edgeport.runtime.envinfo\n"
        "import edgeport.runtime.cli.bench, edgeport.runtime.cli.check\n"
        "bad = [m for m in ('torch', 'edgeport.train', 'edgeport.export', 'matplotlib', "
        "'onnxruntime') if m in sys.modules]\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "IMPORTED []" in out.stdout
