"""Keep an int8 file only when it wins: faster than fp32 on its engine and still agreeing.

For each target, :class:`Int8Maker` quantizes the prepared fp32 model with the target's recipe,
judges the file against the reference on the target's backend, counts the convolutions the
engine still runs in float and times it against the fp32 artifact on that engine (both loaded
at once, interleaved rounds, median latency at the smallest batch the model takes). A file that
is less than ``min_speedup`` times faster, or fails parity, goes through at most
``fallback_rounds`` rounds of keeping layers in float: those that disagree most
(:func:`~edgeport.export.int8.fallback.disagreeing_layers`) when it failed, those whose int8
kernels cost most over float (:func:`~edgeport.export.int8.fallback.costly_layers`) when it was
slow; then it is re-quantized, re-judged and re-timed. The fastest attempt that passed is kept;
when it is still slow it is left out (or kept, marked, with ``keep_slow``), and when none
passed it is left out (or, with ``allow_parity_failure``, kept marked failed by the gate).

TensorRT cannot be timed without a GPU: its file is judged here on ONNX Runtime's CPU provider
(the Q/DQ arithmetic) and its speed is recorded as not measured; the engine built from it is
timed and judged where a GPU can run it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.export.int8 import Int8Policy, Int8Target
from edgeport.export.int8.fallback import LayerNames, costly_layers, disagreeing_layers, layer_costs
from edgeport.export.int8.float_convs import FloatConvs, float_convs
from edgeport.export.int8.recipes import Quantized
from edgeport.export.samples import Batch
from edgeport.runtime.card import ModelCard
from edgeport.runtime.compare import Verdict
from edgeport.runtime.errors import EdgeportError, ExportError

log = logging.getLogger(__name__)

TIMING_ROUNDS = 7
LAYER_FEED_SAMPLES = 16  # samples the per-layer comparison runs
LAYERS_PER_ROUND = 4
# the backend that judges a target's file here when its own engine cannot run on this machine
CPU_JUDGE = "onnxruntime-cpu"
DECISIONS = ("kept", "kept-slow", "kept-untimed", "left-out")  # Outcome.decision


@dataclass(frozen=True)
class Timing:
    """fp32 against int8 on one backend in interleaved rounds: each one's latency, the median
    of its fastest round, and the speed-up, their ratio. The fastest rounds, because a busy
    moment only adds time and does not add it to both sides alike: where a virtual machine's
    two cores share one host core for a while, ONNX Runtime's two-thread sessions slow down by
    different amounts for fp32 and int8 (``benchmarks/ort_spinning.py``: Magika's fp32 file
    2.8 ms, 4.7 ms in such a stretch, its int8 file going from 1.2-1.3x faster to 1.05x slower)."""

    backend: str
    batch: int
    threads: int | None
    fp32_ms: float
    int8_ms: float
    speedup: float
    rounds: int
    seconds_each: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "batch": self.batch,
            "threads": self.threads,
            "cpu_count": os.cpu_count(),
            "fp32_ms": round(self.fp32_ms, 4),
            "int8_ms": round(self.int8_ms, 4),
            "speedup": round(self.speedup, 3),
            "how": (
                f"both loaded at once, timed {self.seconds_each:g} s each over {self.rounds} "
                "interleaved rounds; latency: the median of each one's fastest round; "
                "speed-up: their ratio"
            ),
        }


@dataclass
class Attempt:
    """One quantization of the fallback loop and what it measured."""

    float_layers: tuple[str, ...]
    path: Path
    quantized: Quantized
    verdict: Verdict
    timing: Timing | None = None
    float_convs: FloatConvs | None = None

    @property
    def passed(self) -> bool:
        return self.verdict.status == "passed"

    @property
    def speedup(self) -> float | None:
        return None if self.timing is None else self.timing.speedup

    def to_dict(self) -> dict[str, Any]:
        return {
            "float_layers": list(self.float_layers),
            "parity": self.verdict.status,
            "failures": self.verdict.failures,
            "speedup": None if self.timing is None else round(self.timing.speedup, 3),
            "float_convs": None if self.float_convs is None else self.float_convs.float,
        }


@dataclass
class Outcome:
    """A target's decision: the attempt chosen, every attempt made, and why."""

    target: Int8Target
    decision: str  # one of DECISIONS
    reason: str
    chosen: Attempt | None  # None: the quantizer itself failed
    attempts: list[Attempt] = field(default_factory=list)
    untimed: str | None = None  # why the speed was not measured

    @property
    def kept(self) -> bool:
        return self.decision != "left-out"

    def record(self) -> dict[str, Any]:
        """The manifest's record of this int8 file (``Artifact.quantization``)."""
        record: dict[str, Any] = {"target": self.target.target}
        chosen = self.chosen
        if chosen is not None:
            timing = chosen.timing
            record |= {
                "quantizer": chosen.quantized.quantizer,
                "settings": chosen.quantized.settings,
                "float_layers": list(chosen.float_layers),
                "float_convs": None if chosen.float_convs is None else chosen.float_convs.to_dict(),
                "speedup": None if timing is None else round(timing.speedup, 3),
                "timing": None if timing is None else timing.to_dict(),
                "not_timed": self.untimed,
                "judged_on": chosen.verdict.backend,
            }
        return record | {
            "decision": self.decision,
            "reason": self.reason,
            "attempts": [a.to_dict() for a in self.attempts],
        }


Judge = Callable[[str, Path, str], Verdict]  # (artifact name, file, backend) -> verdict


@dataclass
class Int8Maker:
    """Everything the targets share: the fp32 artifact (timed against), the prepared fp32
    model (quantized, and the per-layer reference), calibration, inputs for timing and
    per-layer comparisons, the judge (export's parity check) and where to work."""

    fp32: Path
    prepared: Path
    card: ModelCard
    calibration: Sequence[Batch]
    method: str
    policy: Int8Policy
    inputs: Batch
    judge: Judge
    work: Path
    engine_note: Mapping[str, str] = field(default_factory=dict)  # backend -> why not timed

    def make(self, target: Int8Target) -> Outcome:
        """Quantize for ``target``, judge, time and fall back as the module doc says."""
        names = LayerNames.of(self.prepared)
        attempts: list[Attempt] = []
        exclude: tuple[str, ...] = ()
        for round_ in range(self.policy.fallback_rounds + 1):
            try:
                attempt = self._attempt(target, exclude, round_)
            except ExportError as exc:  # the quantizer could not make this file
                log.warning("int8 %s attempt %d: %s", target.target, round_, exc)
                if not attempts:
                    return Outcome(target, "left-out", str(exc), None)
                break
            attempts.append(attempt)
            if self._wins(attempt) or round_ == self.policy.fallback_rounds:
                break
            more = self._to_keep_in_float(target, attempt, names, exclude)
            if not more or names.weighted_left(exclude + tuple(more)) == 0:
                log.info("int8 %s: no further layer to keep in float", target.target)
                break
            log.info("int8 %s: keeping %s in float and trying again", target.target, more)
            exclude = (*exclude, *more)
        return self._decide(target, attempts)

    def _attempt(self, target: Int8Target, exclude: tuple[str, ...], round_: int) -> Attempt:
        from edgeport.export.quantize import quantize_int8

        path = self.work / f"{target.target}.{round_}.onnx"
        quantized = quantize_int8(
            self.prepared,
            path,
            self.card,
            self.calibration,
            target=target.target,
            method=self.method,
            exclude=exclude,
            prepared=True,
        )
        backend = self._backend(target)
        verdict = self.judge(target.artifact, path, CPU_JUDGE if backend is None else backend)
        attempt = Attempt(exclude, path, quantized, verdict)
        if backend is not None:
            attempt.float_convs = float_convs(backend, path)
            attempt.timing = self._time(backend, path)
        log.info(
            "int8 %s attempt %d: parity %s, %s, speed-up %s",
            target.target,
            round_,
            verdict.status,
            attempt.float_convs or "float convolutions not counted",
            "not measured" if attempt.timing is None else f"{attempt.timing.speedup:.2f}x",
        )
        return attempt

    def _backend(self, target: Int8Target) -> str | None:
        """The backend that times ``target`` here, None when it cannot run on this machine."""
        return None if target.backend in self.engine_note else target.backend

    def _wins(self, attempt: Attempt) -> bool:
        speedup = attempt.speedup
        return attempt.passed and (speedup is None or speedup >= self.policy.min_speedup)

    def _to_keep_in_float(
        self, target: Int8Target, attempt: Attempt, names: LayerNames, exclude: tuple[str, ...]
    ) -> list[str]:
        feeds = {n: a[:LAYER_FEED_SAMPLES] for n, a in self.inputs.items()}
        try:
            if not attempt.passed:
                return disagreeing_layers(
                    self.prepared, attempt.path, names, feeds, exclude, LAYERS_PER_ROUND
                )
            backend = self._backend(target)
            if backend is None:
                return []
            single = {n: a[: self._batch()] for n, a in self.inputs.items()}
            costs = layer_costs(
                backend, self.prepared, attempt.path, names, single, self.policy.threads
            )
            return costly_layers(costs, exclude, LAYERS_PER_ROUND)
        except EdgeportError as exc:
            log.warning("int8 %s: cannot tell which layers to keep in float: %s", target, exc)
            return []

    def _batch(self) -> int:
        """The batch timed: the smallest the model takes (1 unless its batch is fixed)."""
        first = self.card.inputs[0] if self.card.inputs else None
        low = first.all_ranges[0][0] if first is not None and first.rank else 1
        available = len(next(iter(self.inputs.values())))
        return max(1, min(low, available))

    def _time(self, backend: str, int8: Path) -> Timing:
        return time_against_fp32(backend, self.fp32, int8, self.inputs, self._batch(), self.policy)

    def _decide(self, target: Int8Target, attempts: list[Attempt]) -> Outcome:
        passed = [a for a in attempts if a.passed]
        untimed = self.engine_note.get(target.backend)
        if not passed:
            chosen = attempts[-1]
            failures = "; ".join(chosen.verdict.failures)
            reason = (
                f"fails parity after {len(attempts)} attempt(s), the last with "
                f"{len(chosen.float_layers)} layer(s) in float: {failures}"
            )
            return Outcome(target, "left-out", reason, chosen, attempts, untimed)
        chosen = max(passed, key=lambda a: a.speedup or 0.0)
        if chosen.timing is None:
            reason = f"passes parity; speed not measured: {untimed}"
            return Outcome(target, "kept-untimed", reason, chosen, attempts, untimed)
        speed = (
            f"{chosen.timing.speedup:.2f}x fp32 on {chosen.timing.backend} "
            f"({chosen.timing.int8_ms:.3g} vs {chosen.timing.fp32_ms:.3g} ms, batch "
            f"{chosen.timing.batch})"
        )
        if chosen.timing.speedup >= self.policy.min_speedup:
            return Outcome(target, "kept", f"{speed}, passes parity", chosen, attempts)
        reason = (
            f"{speed}, below the {self.policy.min_speedup:g}x it must reach, after "
            f"{len(attempts)} attempt(s)"
        )
        decision = "kept-slow" if self.policy.keep_slow else "left-out"
        return Outcome(target, decision, reason, chosen, attempts)


def time_against_fp32(
    backend: str, fp32: Path, int8: Path, inputs: Batch, batch: int, policy: Int8Policy
) -> Timing:
    """``int8`` against ``fp32`` on ``backend``: both loaded at once, timed on the first
    ``batch`` samples of ``inputs`` in :data:`TIMING_ROUNDS` rounds, alternating which goes
    first; each one's latency is its fastest round's median (see :class:`Timing`)."""
    from edgeport.runtime import load
    from edgeport.runtime.tools.timing import TimingConfig, time_interleaved

    feeds = {name: np.ascontiguousarray(a[:batch]) for name, a in inputs.items()}
    options = {"cache_dir": ""} if backend == "openvino" else {}
    threads = policy.threads
    rounds: list[dict[str, float]] = []
    with (
        load(fp32, backend, verify=False, threads=threads, backend_options=options) as a,
        load(int8, backend, verify=False, threads=threads, backend_options=options) as b,
    ):
        steps = {"fp32": lambda: a.infer(feeds), "int8": lambda: b.infer(feeds)}
        for index in range(TIMING_ROUNDS):
            order = list(steps) if index % 2 == 0 else list(steps)[::-1]
            config = TimingConfig(
                warmup_s=0.2 if index == 0 else 0.0,
                duration_s=policy.timing_s / TIMING_ROUNDS,
                min_iterations=3,
            )
            samples = time_interleaved({k: steps[k] for k in order}, config, rounds=1)
            rounds.append({k: float(np.median(v)) for k, v in samples.items()})
    fp32_ms, int8_ms = (min(r[side] for r in rounds) for side in ("fp32", "int8"))
    return Timing(
        backend, batch, threads, fp32_ms, int8_ms, fp32_ms / int8_ms, TIMING_ROUNDS, policy.timing_s
    )


def place(chosen: Attempt, dst: Path) -> None:
    """Move the chosen attempt's file to ``dst`` (in the bundle)."""
    shutil.move(str(chosen.path), str(dst))
    chosen.path = dst
