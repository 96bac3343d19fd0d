"""The benchmark's statistics and timing engine on known inputs (no model, no clock asserts)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.reference import StoredReference
from edgeport.runtime.specs import TensorSpec
from edgeport.runtime.tools.bench import Timed, parse_batches, parse_list, quick_parity
from edgeport.runtime.tools.bench_result import BenchResult, BenchRow, speedups
from edgeport.runtime.tools.timing import (
    DeviceStages,
    LatencyStats,
    TimingConfig,
    throughput,
    time_device,
    time_host,
    time_interleaved,
)


def test_latency_stats_on_known_samples() -> None:
    stats = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0])
    assert stats.count == 4
    assert stats.mean == pytest.approx(2.5)
    assert stats.std == pytest.approx(math.sqrt(1.25))  # population std
    assert (stats.min, stats.max) == (1.0, 4.0)
    assert stats.p50 == pytest.approx(2.5)
    assert stats.p90 == pytest.approx(3.7)
    assert stats.p95 == pytest.approx(3.85)
    assert stats.p99 == pytest.approx(3.97)
    assert stats.cv == pytest.approx(math.sqrt(1.25) / 2.5)
    data = stats.to_dict()
    assert data["cv"] == pytest.approx(stats.cv)
    assert LatencyStats.from_dict(data) == stats


def test_latency_stats_constant_samples_have_zero_cv() -> None:
    stats = LatencyStats.from_samples(np.full(50, 0.25))
    assert stats.std == 0.0 and stats.cv == 0.0
    assert stats.p50 == stats.p99 == stats.min == stats.max == 0.25


@pytest.mark.parametrize(
    ("samples", "message"),
    [([], "non-empty"), ([1.0, -0.5], "non-negative"), ([1.0, float("nan")], "finite")],
)
def test_latency_stats_rejects_bad_samples(samples: list[float], message: str) -> None:
    with pytest.raises(InputError, match=message):
        LatencyStats.from_samples(samples)


def test_throughput_from_mean_latency() -> None:
    stats = LatencyStats.from_samples([3.0, 5.0])  # mean 4 ms
    assert throughput(8, stats) == pytest.approx(2000.0)
    assert throughput(1, stats) == pytest.approx(250.0)


def test_bench_config_validation_and_stopping_rule() -> None:
    with pytest.raises(ConfigError, match="duration must be > 0"):
        TimingConfig(duration_s=0)
    with pytest.raises(ConfigError, match="warm-up must be >= 0"):
        TimingConfig(warmup_s=-1)
    with pytest.raises(ConfigError, match="iterations must be >= 1"):
        TimingConfig(iterations=0)
    by_count = TimingConfig(iterations=3)
    assert [by_count.keep_going(n, 1e9) for n in range(5)] == [True, True, True, False, False]
    by_time = TimingConfig(duration_s=1.0, min_iterations=2, max_iterations=10)
    assert by_time.keep_going(0, 5.0) and by_time.keep_going(1, 5.0)  # minimum count first
    assert not by_time.keep_going(2, 1.0)  # duration reached
    assert by_time.keep_going(5, 0.5)
    assert not by_time.keep_going(10, 0.1)  # maximum count


def test_time_host_counts_calls() -> None:
    calls = []
    samples = time_host(lambda: calls.append(1), TimingConfig(warmup_s=0.0, iterations=7))
    assert samples.shape == (7,)
    assert (samples >= 0).all()
    assert len(calls) == 8  # one warm-up call (warm-up is at least one call) + 7 timed


class ScriptedEvent:
    """A device event whose timestamp is read from a scripted clock when recorded."""

    def __init__(self, clock: list[float]) -> None:
        self._clock = clock
        self.time: float | None = None

    def record(self) -> None:
        self.time = self._clock[0]

    def synchronize(self) -> None:
        assert self.time is not None

    def elapsed_ms(self, end: ScriptedEvent) -> float:
        assert self.time is not None and end.time is not None
        return end.time - self.time


def test_time_device_splits_stages_and_totals() -> None:
    clock = [0.0]

    def advance(ms: float):
        def enqueue() -> None:
            clock[0] += ms

        return enqueue

    work = DeviceStages(
        stages=(("h2d", advance(0.5)), ("compute", advance(2.0)), ("d2h", advance(0.25))),
        new_event=lambda: ScriptedEvent(clock),
    )
    samples = time_device(work, TimingConfig(warmup_s=0.0, iterations=4))
    assert set(samples) == {"h2d", "compute", "d2h", "total"}
    np.testing.assert_allclose(samples["h2d"], [0.5] * 4)
    np.testing.assert_allclose(samples["compute"], [2.0] * 4)
    np.testing.assert_allclose(samples["d2h"], [0.25] * 4)
    np.testing.assert_allclose(samples["total"], [2.75] * 4)


IMAGE = TensorSpec("image", "float32", ("batch", 1, 1, 1))
LOGITS = TensorSpec("logits", "float32", ("batch", 4))


def _timed(run, **kwargs) -> Timed:
    return Timed("x", "edgeport", "fp32", "cpu", (IMAGE,), (LOGITS,), run, lambda: None, **kwargs)


def test_quick_parity_runs_whole_chunks_only() -> None:
    logits = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    images = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    reference = StoredReference({"image": images}, {"logits": logits}, None)
    calls: list[int] = []
    nan_row = [-1]

    def run(feeds):  # image i -> reference logits i, shifted by 0.5
        batch = feeds["image"]
        calls.append(len(batch))
        out = logits[batch[:, 0, 0, 0].astype(int)] + 0.5
        out[batch[:, 0, 0, 0] == nan_row[0]] = np.nan
        return {"logits": out}

    capped = _timed(run, max_batch=4)
    found = quick_parity(capped, reference, 8, classifier=True)  # chunks of 4: 8 of 10 images
    assert calls == [4, 4]
    assert found is not None and found["count"] == 8 and found["nonfinite"] == 0
    assert found["top1_agreement"] == 1.0 and found["max_abs"] == pytest.approx(0.5)
    assert found["passed"] is False and found["failures"][0].startswith(
        "logits: max abs error 0.5 > "
    )
    assert found["outputs"]["logits"]["kind"] == "logits"

    free = _timed(run)
    fixed = {"image": (16, 1, 1, 1)}
    assert quick_parity(free, reference, 16, fixed=fixed) is None  # 10 images: no batch of 16
    assert quick_parity(free, reference, 2, fixed={"image": (2, 1, 2, 2)}) is None  # other shape
    calls.clear()
    nan_row[0] = 3
    found = quick_parity(free, reference, 16, classifier=True)  # all 10 images in one call
    assert calls == [10] and found is not None and found["count"] == 10
    assert found["nonfinite"] == 4 and found["max_abs"] is None
    assert found["top1_agreement"] == pytest.approx(0.9)  # the NaN row disagrees
    found = quick_parity(free, reference, 16, classifier=False)  # judged as a plain tensor
    assert found is not None and found["top1_agreement"] is None
    assert found["outputs"]["logits"]["kind"] == "tensor"


def _row(backend: str, batch: int, p50: float, *, precision: str = "fp32", device: str = "cpu"):
    stats = LatencyStats(10, p50, 0.0, p50, p50, p50, p50, p50, p50)
    return BenchRow(
        shapes={"image": (batch, 3, 32, 32)},
        backend=backend,
        kind="baseline" if backend.startswith("torch") else "edgeport",
        precision=precision,
        device=device,
        batch=batch,
        latency=stats,
        throughput=throughput(batch, stats),
        timer="perf_counter_ns",
    )


def test_speedups_against_eager_fp32_same_device_and_batch() -> None:
    rows = speedups(
        [
            _row("torch", 1, 2.0),
            _row("onnxruntime-cpu", 1, 0.5),
            _row("onnxruntime-cpu", 1, 0.4, precision="int8"),
            _row("onnxruntime-cpu", 8, 1.0),  # no eager at batch 8
            _row("onnxruntime-cuda", 1, 0.1, device="cuda"),  # no eager on cuda
        ]
    )
    ratios = [r.speedup_vs_eager for r in rows]
    assert ratios[0] == pytest.approx(1.0)
    assert ratios[1] == pytest.approx(4.0)
    assert ratios[2] == pytest.approx(5.0)
    assert ratios[3] is None and ratios[4] is None


def test_scenario_summaries() -> None:
    rows = [
        _row("torch", 1, 2.0),
        _row("torch", 8, 8.0),
        _row("onnxruntime-cpu", 1, 0.5),
        _row("onnxruntime-cpu", 8, 1.0),
    ]
    result = BenchResult(rows=speedups(rows), skipped=[], config={}, environment={}, model={})
    single = result.single_stream()
    assert [d["backend"] for d in single] == ["onnxruntime-cpu", "torch"]
    assert single[0]["p90_ms"] == pytest.approx(0.5)
    assert single[0]["speedup_vs_eager"] == pytest.approx(4.0)
    offline = result.offline()
    assert offline[0] == {
        "backend": "onnxruntime-cpu",
        "chosen_backend": None,
        "precision": "fp32",
        "device": "cpu",
        "cuda_graph": False,
        "shapes": {"image": [8, 3, 32, 32]},
        "batch": 8,
        "samples_per_s": pytest.approx(8000.0),
    }
    assert offline[1]["backend"] == "torch" and offline[1]["batch"] == 8
    assert result.find("onnxruntime-cpu", "fp32", 8).latency.p50 == 1.0
    assert result.find("onnxruntime-cpu", "fp16", 8) is None


def test_result_round_trips_through_dict() -> None:
    result = BenchResult(
        rows=speedups([_row("torch", 1, 2.0), _row("onnxruntime-cpu", 1, 0.5)]),
        skipped=[],
        config={"scenario": "both"},
        environment={"machine": "x"},
        model={"name": "simple_cnn_bn"},
        created="2026-01-01T00:00:00+00:00",
    )
    data = result.to_dict()
    assert data["schema"] == "edgeport.bench" and data["schema_version"] == 3
    again = BenchResult.from_dict(data)
    assert again.rows == result.rows
    with pytest.raises(InputError, match="not an edgeport benchmark"):
        BenchResult.from_dict({"schema": "other"})


def test_parse_batches_and_lists() -> None:
    assert parse_batches("32, 1,8,8") == (1, 8, 32)
    assert parse_batches([4, 2]) == (2, 4)
    with pytest.raises(ConfigError, match="integers"):
        parse_batches("1,x")
    with pytest.raises(ConfigError, match=">= 1"):
        parse_batches("0,1")
    assert parse_list("fp32,int8", ("fp32", "fp16", "int8"), "precisions") == ("fp32", "int8")
    assert parse_list("", ("a",), "things") is None
    with pytest.raises(ConfigError, match=r"unknown backends \['onnxruntime-gpu'\]"):
        parse_list("onnxruntime-gpu", ("onnxruntime-cpu",), "backends")


def test_interleaved_rounds_rotate_the_order_and_share_the_calls() -> None:
    calls: list[str] = []
    steps = {key: (lambda key=key: calls.append(key)) for key in ("a", "b", "c")}
    config = TimingConfig(warmup_s=0.0, iterations=6, min_iterations=3)
    samples = time_interleaved(steps, config, rounds=3)
    assert {k: len(v) for k, v in samples.items()} == {"a": 6, "b": 6, "c": 6}
    timed = calls[3:]  # after one warm-up call each
    assert len(timed) == 9 * 3  # per step and round: one untimed call, then 2 timed
    firsts = [timed[i] for i in range(0, len(timed), 3)]
    assert firsts == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    with pytest.raises(ConfigError, match="rounds must be >= 1"):
        time_interleaved(steps, config, rounds=0)
