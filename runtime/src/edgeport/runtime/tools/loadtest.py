"""``edgeport bench --url``: load-test a model served with the Open Inference Protocol.

MLPerf's Server scenario: requests arrive as a Poisson process at a target QPS and are sent on
schedule, open loop (a slow answer never delays the next request), over as many concurrent
connections as needed. Each request's latency runs from its *scheduled* send time to the end
of its answer, so a client or server that falls behind shows in the percentiles instead of
hiding (no coordinated omission). A point passes when no request failed and its p99 is within
``latency_bound_ms``; the search finds the highest passing QPS: doubling from a start, then
bisecting between the last pass and the first failure.

The body is encoded once with the one OIP codec (:mod:`edgeport.runtime.serve.protocol`) from
an ``.npz`` file or synthetic inputs made from the model's metadata.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.errors import BackendUnavailable, ConfigError, InputError
from edgeport.runtime.feeds import load_npz, synthetic_feeds
from edgeport.runtime.io import write_report
from edgeport.runtime.serve.protocol import encode_infer_request, specs_from_metadata
from edgeport.runtime.tools.timing import LatencyStats

log = logging.getLogger(__name__)
URL_RE = re.compile(r"^https?://[^/\s]+/v2/models/[^/\s]+$")
MAX_DOUBLINGS = 16
PASS_MARK = "yes"


def _aiohttp() -> ModuleType:
    try:
        import aiohttp
    except ImportError as exc:
        raise BackendUnavailable(
            "edgeport bench --url needs aiohttp: pip install 'edgeport-runtime[serve]'"
        ) from exc
    return aiohttp


@dataclass(frozen=True)
class LoadTestSettings:
    """One load test. ``qps``: one point; ``qps_sweep`` (start, stop, step): each point; with
    neither, ``latency_bound_ms`` searches for the highest passing QPS from ``start_qps``
    (default: what one connection achieves)."""

    url: str  # http://HOST:PORT/v2/models/NAME
    qps: float | None = None
    qps_sweep: tuple[float, float, float] | None = None
    duration_s: float = 10.0
    latency_bound_ms: float | None = None
    inputs: str = "synthetic"  # or an .npz file, one array per input
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    value_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    seed: int = 0
    binary: bool = True
    timeout_s: float = 30.0
    max_connections: int = 512
    warmup_requests: int = 10
    search_steps: int = 4
    start_qps: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))
        problems = []
        if not URL_RE.match(self.url):
            problems.append(f"url must be http://HOST:PORT/v2/models/NAME, got {self.url!r}")
        for what in ("qps", "duration_s", "latency_bound_ms", "timeout_s", "start_qps"):
            value = getattr(self, what)
            if value is not None and not value > 0:
                problems.append(f"{what} must be > 0, got {value}")
        if self.qps_sweep is not None:
            start, stop, step = self.qps_sweep
            if not 0 < start <= stop or not step > 0:
                problems.append(f"qps sweep needs 0 < start <= stop and step > 0: {self.qps_sweep}")
        if self.qps is not None and self.qps_sweep is not None:
            problems.append("give a QPS or a sweep, not both")
        if self.qps is None and self.qps_sweep is None and self.latency_bound_ms is None:
            problems.append("give a QPS, a QPS sweep or a latency bound to search under")
        if self.max_connections < 1 or self.warmup_requests < 1 or self.search_steps < 0:
            problems.append("max_connections and warmup_requests must be >= 1, search_steps >= 0")
        if problems:
            raise ConfigError("invalid load test: " + "; ".join(problems))

    @property
    def targets(self) -> list[float] | None:
        """The QPS points asked for; None means search."""
        if self.qps is not None:
            return [self.qps]
        if self.qps_sweep is not None:
            start, stop, step = self.qps_sweep
            return [float(q) for q in np.arange(start, stop + step / 2, step)]
        return None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        return data


@dataclass(frozen=True)
class LoadPoint:
    """One run at one target QPS. ``offered_qps``: requests sent per second of the schedule;
    ``achieved_qps``: successful answers per second from the first send to the last answer."""

    target_qps: float
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    offered_qps: float
    achieved_qps: float
    latency_ms: LatencyStats | None
    passed: bool | None  # None without a latency bound

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency_ms"] = self.latency_ms.to_dict() if self.latency_ms else None
        return data


@dataclass(frozen=True)
class LoadTestResult:
    settings: LoadTestSettings
    model: dict[str, Any]
    points: list[LoadPoint]
    environment: dict[str, Any]
    created: str

    @property
    def best_qps(self) -> float | None:
        """The highest target QPS that passed (None without a bound or a pass)."""
        passing = [p.target_qps for p in self.points if p.passed]
        return max(passing) if passing else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "edgeport.loadtest",
            "schema_version": 1,
            "created": self.created,
            "model": self.model,
            "config": self.settings.to_dict(),
            "environment": self.environment,
            "points": [p.to_dict() for p in self.points],
            "best_qps": self.best_qps,
        }


# -- one run ------------------------------------------------------------------------------------


class _Client:
    """Sends the one request body to the infer URL and times each answer."""

    def __init__(self, session: Any, url: str, body: bytes, headers: dict[str, str]) -> None:
        self.session, self.url, self.body, self.headers = session, url, body, headers
        self.aiohttp = _aiohttp()

    async def send(self, scheduled: float) -> tuple[str, float]:
        """(status, latency in ms from ``scheduled``, a loop time)."""
        loop = asyncio.get_running_loop()
        try:
            async with self.session.post(self.url, data=self.body, headers=self.headers) as resp:
                await resp.read()
                status = str(resp.status)
        except asyncio.TimeoutError:
            status = "timeout"
        except self.aiohttp.ClientError as exc:
            status = type(exc).__name__
        return status, (loop.time() - scheduled) * 1000.0

    async def warm_up(self, count: int) -> float:
        """The median latency (ms) of ``count`` requests one after another; all must pass."""
        loop = asyncio.get_running_loop()
        latencies = []
        for _ in range(count):
            status, ms = await self.send(loop.time())
            if status != "200":
                raise InputError(f"{self.url} answered {status} during warm-up; is the model up?")
            latencies.append(ms)
        return statistics.median(latencies)

    async def run(
        self, qps: float, duration_s: float, seed: int
    ) -> tuple[list[tuple[str, float]], float]:
        """Poisson arrivals at ``qps`` for ``duration_s``, each sent on schedule: each answer's
        (status, latency) and the seconds from the first send to the last answer."""
        rng = np.random.default_rng(seed)
        gaps = rng.exponential(1.0 / qps, size=int(qps * duration_s * 1.5) + 16)
        offsets = np.cumsum(gaps)
        offsets = offsets[offsets < duration_s]
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.01
        tasks = []
        for offset in offsets:
            scheduled = start + float(offset)
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.send(scheduled)))
        answers = list(await asyncio.gather(*tasks))
        return answers, loop.time() - start


def summarize(
    target: float,
    duration_s: float,
    answers: list[tuple[str, float]],
    span_s: float,
    bound: float | None,
) -> LoadPoint:
    """A :class:`LoadPoint` from each request's (status, latency) over ``span_s`` seconds."""
    ok = [ms for status, ms in answers if status == "200"]
    errors: dict[str, int] = {}
    for status, _ in answers:
        if status != "200":
            errors[status] = errors.get(status, 0) + 1
    stats = LatencyStats.from_samples(ok) if ok else None
    passed = None
    if bound is not None:
        passed = bool(answers) and not errors and stats is not None and stats.p99 <= bound
    return LoadPoint(
        target_qps=target,
        duration_s=duration_s,
        sent=len(answers),
        ok=len(ok),
        errors=errors,
        offered_qps=len(answers) / duration_s,
        achieved_qps=len(ok) / max(span_s, 1e-9),
        latency_ms=stats,
        passed=passed,
    )


# -- the test -----------------------------------------------------------------------------------


def _feeds(settings: LoadTestSettings, metadata: dict[str, Any]) -> dict[str, np.ndarray]:
    specs = specs_from_metadata(metadata)
    if settings.inputs not in ("synthetic", "auto"):
        if settings.shapes or settings.value_ranges:
            raise ConfigError("--shapes and --value-range shape synthetic inputs, not an .npz")
        return load_npz(Path(settings.inputs), specs)
    return synthetic_feeds(specs, settings.shapes, settings.value_ranges, settings.seed)


async def _point(client: _Client, settings: LoadTestSettings, qps: float) -> LoadPoint:
    answers, span_s = await client.run(qps, settings.duration_s, settings.seed)
    point = summarize(qps, settings.duration_s, answers, span_s, settings.latency_bound_ms)
    p99 = point.latency_ms.p99 if point.latency_ms else float("nan")
    log.info(
        "%.1f QPS: %d sent, %.1f achieved, p99 %.2f ms, errors %s, passed %s",
        qps,
        point.sent,
        point.achieved_qps,
        p99,
        point.errors or "none",
        point.passed,
    )
    return point


async def _search(client: _Client, settings: LoadTestSettings, base_ms: float) -> list[LoadPoint]:
    """Double from the start QPS until a point fails, then bisect ``search_steps`` times."""
    points: list[LoadPoint] = []
    qps = settings.start_qps or max(1.0, 1000.0 / max(base_ms, 1e-3))
    low, high = 0.0, None
    for _ in range(MAX_DOUBLINGS):
        points.append(await _point(client, settings, qps))
        if not points[-1].passed:
            high = qps
            break
        low, qps = qps, qps * 2
    if high is None:
        return points
    for _ in range(settings.search_steps):
        qps = (low + high) / 2 if low else high / 2
        points.append(await _point(client, settings, qps))
        low, high = (qps, high) if points[-1].passed else (low, qps)
    return points


async def _get_json(session: Any, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        text = await resp.text()
        if resp.status != 200:
            raise InputError(f"GET {url} answered {resp.status}: {text[:300]}")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"GET {url} did not answer JSON: {text[:300]}") from exc
    return data if isinstance(data, dict) else {}


async def _load_test(settings: LoadTestSettings) -> tuple[dict[str, Any], list[LoadPoint]]:
    aiohttp = _aiohttp()
    connector = aiohttp.TCPConnector(limit=settings.max_connections)
    timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        try:
            metadata = await _get_json(session, settings.url)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise InputError(f"cannot reach {settings.url}: {exc}") from exc
        body, headers = encode_infer_request(_feeds(settings, metadata), binary=settings.binary)
        client = _Client(session, f"{settings.url}/infer", body, headers)
        base_ms = await client.warm_up(settings.warmup_requests)
        targets = settings.targets
        if targets is None:
            return metadata, await _search(client, settings, base_ms)
        return metadata, [await _point(client, settings, q) for q in targets]


def load_test(settings: LoadTestSettings) -> LoadTestResult:
    """Run the load test ``settings`` describe against a running server."""
    from edgeport.runtime.envinfo import collect_environment

    metadata, points = asyncio.run(_load_test(settings))
    return LoadTestResult(
        settings=settings,
        model=metadata,
        points=points,
        environment=collect_environment(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# -- reports ------------------------------------------------------------------------------------


def _ms(stats: LatencyStats | None, key: str) -> str:
    return "-" if stats is None else f"{getattr(stats, key):.2f}"


def loadtest_markdown(result: LoadTestResult) -> str:
    """The points as a table, and the highest passing QPS."""
    s = result.settings
    bound = f"{s.latency_bound_ms:g} ms" if s.latency_bound_ms else "none"
    lines = [
        f"## Load test: {s.url}",
        "",
        f"Server scenario (Poisson arrivals, open loop), {s.duration_s:g} s per point, "
        f"{'binary' if s.binary else 'JSON'} tensors, p99 bound {bound}.",
        "",
        "| target QPS | sent | achieved QPS | p50 ms | p90 ms | p99 ms | errors | passed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in result.points:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(p.errors.items())) or "-"
        passed = "-" if p.passed is None else PASS_MARK if p.passed else "no"
        lines.append(
            f"| {p.target_qps:.1f} | {p.sent} | {p.achieved_qps:.1f} | "
            f"{_ms(p.latency_ms, 'p50')} | {_ms(p.latency_ms, 'p90')} | "
            f"{_ms(p.latency_ms, 'p99')} | {errors} | {passed} |"
        )
    if s.latency_bound_ms:
        best = result.best_qps
        lines += [
            "",
            f"Highest QPS with p99 <= {bound}: " + ("none" if best is None else f"{best:.1f}"),
        ]
    return "\n".join(lines) + "\n"


def write_loadtest(
    result: LoadTestResult, *, json_path: Path | None = None, markdown_path: Path | None = None
) -> list[Path]:
    """Write whichever outputs are asked for; returns the paths written."""
    return write_report(
        result.to_dict,
        lambda: loadtest_markdown(result),
        json_path=json_path,
        markdown_path=markdown_path,
    )
