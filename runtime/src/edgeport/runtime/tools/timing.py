"""The timing engine of every benchmark: warm up, repeat, one sample per call, percentiles.

The discipline is the usual one (trtexec, MLPerf, cifar10-airbench): warm up for a time, then
repeat for a time (or a count), one sample per call, and report percentiles.

- On the host, each call is timed with ``time.perf_counter_ns``; ``Model.run`` returns numpy,
  so the device (if any) has finished when the clock is read.
- On a GPU, work that exposes :class:`DeviceStages` (host-to-device copy, compute,
  device-to-host copy, each enqueued on one stream) is timed with device events recorded
  between the stages: CUDA events through cuda-python (:class:`CudaEvent`), or
  ``torch.cuda.Event`` in the PyTorch baselines. The three stages are reported separately,
  like trtexec's H2D / GPU compute / D2H.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol, TypeVar

import numpy as np

from edgeport.runtime.backends.cuda import cuda_call, cudart
from edgeport.runtime.errors import ConfigError, InputError

K = TypeVar("K", bound=Hashable)

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latency samples in milliseconds. ``cv`` = std / mean (population std)."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    p50: float
    p90: float
    p95: float
    p99: float

    @property
    def cv(self) -> float:
        return self.std / self.mean if self.mean > 0 else 0.0

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
        data = np.asarray(samples_ms, dtype=np.float64)
        if data.ndim != 1 or data.size == 0:
            raise InputError(f"expected a non-empty 1-D list of samples, got shape {data.shape}")
        if not np.isfinite(data).all() or (data < 0).any():
            raise InputError("latency samples must be finite and non-negative")
        p50, p90, p95, p99 = (float(v) for v in np.percentile(data, PERCENTILES))
        return cls(
            count=int(data.size),
            mean=float(data.mean()),
            std=float(data.std()),
            min=float(data.min()),
            max=float(data.max()),
            p50=p50,
            p90=p90,
            p95=p95,
            p99=p99,
        )

    def to_dict(self) -> dict[str, float]:
        data: dict[str, Any] = asdict(self)
        data["cv"] = self.cv
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def throughput(batch: int, stats: LatencyStats) -> float:
    """Images per second at ``batch`` images per call, from the mean latency."""
    return batch * 1000.0 / stats.mean if stats.mean > 0 else math.inf


# --------------------------------------------------------------------------------------------
# Timing engine


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and measure. ``iterations`` (a count) overrides ``duration_s``."""

    warmup_s: float = 1.0
    duration_s: float = 3.0
    iterations: int | None = None
    min_iterations: int = 10
    max_iterations: int = 1_000_000
    cv_warning: float = 0.10  # warn when std / mean of the latency exceeds this

    def __post_init__(self) -> None:
        problems = []
        if not self.warmup_s >= 0:
            problems.append(f"warm-up must be >= 0 s, got {self.warmup_s}")
        if not self.duration_s > 0:
            problems.append(f"duration must be > 0 s, got {self.duration_s}")
        if self.iterations is not None and self.iterations < 1:
            problems.append(f"iterations must be >= 1, got {self.iterations}")
        if self.min_iterations < 1 or self.max_iterations < self.min_iterations:
            problems.append(
                f"need 1 <= min_iterations <= max_iterations, got "
                f"{self.min_iterations} and {self.max_iterations}"
            )
        if problems:
            raise ConfigError("invalid benchmark settings: " + "; ".join(problems))

    def keep_going(self, count: int, elapsed_s: float) -> bool:
        """Whether another timed iteration is due after ``count`` took ``elapsed_s``."""
        if self.iterations is not None:
            return count < self.iterations
        if count >= self.max_iterations:
            return False
        return count < self.min_iterations or elapsed_s < self.duration_s


def _warm_up(step: Callable[[], object], warmup_s: float) -> None:
    """Call ``step`` at least once and until ``warmup_s`` has passed."""
    start = time.perf_counter()
    while True:
        step()
        if time.perf_counter() - start >= warmup_s:
            return


def time_host(step: Callable[[], object], config: TimingConfig) -> np.ndarray:
    """Latency samples (ms) of ``step`` timed on the host with ``perf_counter_ns``."""
    _warm_up(step, config.warmup_s)
    samples: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    while config.keep_going(len(samples), (clock() - start) / 1e9):
        t0 = clock()
        step()
        samples.append(clock() - t0)
    return np.asarray(samples, dtype=np.float64) / 1e6


def time_interleaved(
    steps: Mapping[K, Callable[[], object]], config: TimingConfig, rounds: int = 5
) -> dict[K, np.ndarray]:
    """Latency samples (ms) of each step, timed in ``rounds`` interleaved rounds: every step
    is warmed up, then each round times each step for ``duration_s / rounds`` (or
    ``iterations / rounds`` calls, after one untimed call) in an order rotated per round, so
    a slow moment of a busy or shared machine lands on every step instead of deciding between
    them."""
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    keys = list(steps)
    for key in keys:
        _warm_up(steps[key], config.warmup_s)
    iterations = None if config.iterations is None else max(1, config.iterations // rounds)
    share = replace(
        config,
        warmup_s=0.0,
        duration_s=config.duration_s / rounds,
        iterations=iterations,
        min_iterations=max(1, config.min_iterations // rounds),
    )
    samples: dict[K, list[np.ndarray]] = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            samples[key].append(time_host(steps[key], share))
    return {key: np.concatenate(parts) for key, parts in samples.items()}


class DeviceEvent(Protocol):
    """A device timestamp recorded on a stream (a CUDA event)."""

    def record(self) -> None: ...

    def synchronize(self) -> None: ...

    def elapsed_ms(self, end: DeviceEvent) -> float: ...


@dataclass
class DeviceStages:
    """One batch prepared on a device, as stages that are enqueued on ONE stream.

    ``stages`` are ``(name, enqueue)`` pairs, normally ``h2d``, ``compute``, ``d2h``; each call
    only enqueues work. ``new_event`` makes an event that records on the same stream. A GPU
    runner (a baseline, ``benchmarks/gpu/staged_ort.py``) offers these through a
    ``device_stages(batch) -> DeviceStages`` method.
    """

    stages: Sequence[tuple[str, Callable[[], None]]]
    new_event: Callable[[], DeviceEvent]
    close: Callable[[], None] = lambda: None
    timer: str = "cuda-events"


def time_device(work: DeviceStages, config: TimingConfig) -> dict[str, np.ndarray]:
    """Per-stage and ``total`` latency samples (ms), timed with device events between stages.

    The events are synchronised after every iteration, so each sample is one complete pass and
    the next pass starts on an idle stream (latency, not pipelined throughput).
    """
    names = [name for name, _ in work.stages]
    if not names:
        raise InputError("device work has no stages to time")
    events = [work.new_event() for _ in range(len(names) + 1)]

    def one_pass() -> list[float]:
        events[0].record()
        for (_, enqueue), event in zip(work.stages, events[1:], strict=True):
            enqueue()
            event.record()
        events[-1].synchronize()
        return [events[i].elapsed_ms(events[i + 1]) for i in range(len(names))]

    try:
        _warm_up(one_pass, config.warmup_s)
        per_stage: list[list[float]] = []
        start = time.perf_counter()
        while config.keep_going(len(per_stage), time.perf_counter() - start):
            per_stage.append(one_pass())
    finally:
        for event in events:
            close = getattr(event, "close", None)
            if callable(close):
                close()
    table = np.asarray(per_stage, dtype=np.float64)
    out = {name: table[:, i] for i, name in enumerate(names)}
    out["total"] = table.sum(axis=1)
    return out


# --------------------------------------------------------------------------------------------
# CUDA events through cuda-python (the runtime's clock; the torch baselines use torch's)


class CudaEvent:
    """A CUDA event recorded on a given stream (an int ``cudaStream_t`` handle; 0 = legacy)."""

    def __init__(self, stream: int = 0) -> None:
        self._rt = cudart()
        self._stream = stream
        self._event = cuda_call(self._rt.cudaEventCreate(), "cudaEventCreate")

    def record(self) -> None:
        cuda_call(self._rt.cudaEventRecord(self._event, self._stream), "cudaEventRecord")

    def synchronize(self) -> None:
        cuda_call(self._rt.cudaEventSynchronize(self._event), "cudaEventSynchronize")

    def elapsed_ms(self, end: DeviceEvent) -> float:
        if not isinstance(end, CudaEvent):
            raise InputError("elapsed time needs two CUDA events from the same clock")
        ms = cuda_call(
            self._rt.cudaEventElapsedTime(self._event, end._event), "cudaEventElapsedTime"
        )
        return float(ms)

    def close(self) -> None:
        if self._event is not None:
            cuda_call(self._rt.cudaEventDestroy(self._event), "cudaEventDestroy")
            self._event = None
