"""``edgeport loadtest URL``: load-test a model served with the Open Inference Protocol, over
HTTP or gRPC.

Two ways. With ``concurrency``, a closed loop as Triton's perf_analyzer runs it: that many
requests always in flight, each sent when the one before it on its connection is answered;
throughput and latency percentiles per point. Otherwise MLPerf's Server scenario: requests
arrive as a Poisson process at a target QPS and are sent on
schedule, open loop (a slow answer never delays the next request), over as many concurrent
connections as needed. Each request's latency runs from its *scheduled* send time to the end
of its answer, so a client or server that falls behind shows in the percentiles instead of
hiding (no coordinated omission). A point passes when no request failed and its p99 is within
``latency_bound_ms``; the search finds the highest passing QPS: doubling from a start, then
bisecting between the last pass and the first failure.

The request is encoded once with the one OIP codec (:mod:`edgeport.runtime.serve.protocol`)
from an ``.npz`` file or synthetic inputs made from the model's metadata: binary tensors over
HTTP (or JSON), raw contents over gRPC.
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
from edgeport.runtime.serve.protocol import datatype, encode_infer_request, specs_from_metadata
from edgeport.runtime.tools.formatting import fmt_fixed, markdown_table
from edgeport.runtime.tools.http_client import HttpError, HttpPool, encode_request
from edgeport.runtime.tools.timing import LatencyStats

log = logging.getLogger(__name__)
URL_RE = re.compile(r"^(https?|grpc)://([^/\s]+)/v2/models/([^/\s]+)$")
PROTOCOLS = ("http", "grpc")
MAX_DOUBLINGS = 16
PASS_MARK = "yes"


@dataclass(frozen=True)
class LoadTestSettings:
    """One load test. ``qps``: one point; ``qps_sweep`` (start, stop, step): each point; with
    neither, ``latency_bound_ms`` searches for the highest passing QPS from ``start_qps``
    (default: what one connection achieves)."""

    url: str  # http://HOST:PORT/v2/models/NAME (grpc://... for gRPC)
    protocol: str | None = None  # http or grpc; None: from the URL's scheme
    concurrency: tuple[int, ...] = ()  # closed loop at each of these; () = Poisson arrivals
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
    warmup_requests: int = 10
    search_steps: int = 4
    start_qps: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/"))
        problems = []
        if not URL_RE.match(self.url):
            problems.append(
                f"url must be http://HOST:PORT/v2/models/NAME (or grpc://...), got {self.url!r}"
            )
        elif self.protocol is None:
            object.__setattr__(self, "protocol", "grpc" if self.url.startswith("grpc") else "http")
        if self.protocol not in (None, *PROTOCOLS):
            problems.append(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if any(c < 1 for c in self.concurrency):
            problems.append(f"concurrency must be >= 1, got {list(self.concurrency)}")
        if self.concurrency and (self.qps or self.qps_sweep or self.latency_bound_ms):
            problems.append("give a concurrency (closed loop) or QPS points (open loop), not both")
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
        if (
            not self.concurrency
            and self.qps is None
            and self.qps_sweep is None
            and (self.latency_bound_ms is None)
        ):
            problems.append(
                "give a concurrency, a QPS, a QPS sweep or a latency bound to search under"
            )
        if self.warmup_requests < 1 or self.search_steps < 0:
            problems.append("warmup_requests must be >= 1, search_steps >= 0")
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

    @property
    def address(self) -> str:
        """HOST:PORT of the URL."""
        return URL_RE.match(self.url).group(2)  # type: ignore[union-attr]

    @property
    def model_name(self) -> str:
        return URL_RE.match(self.url).group(3)  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shapes"] = {k: list(v) for k, v in self.shapes.items()}
        return data


@dataclass(frozen=True)
class LoadPoint:
    """One run at one target QPS (or, closed loop, one ``concurrency``). ``offered_qps``:
    requests sent per second of the run; ``achieved_qps``: successful answers per second from
    the first send to the last answer."""

    target_qps: float | None
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    offered_qps: float
    achieved_qps: float
    latency_ms: LatencyStats | None
    passed: bool | None  # None without a latency bound
    concurrency: int | None = None

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
        passing = [p.target_qps for p in self.points if p.passed and p.target_qps is not None]
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


class _HttpInfer:
    """Posts the one request to the infer URL; the answer's status."""

    def __init__(self, pool: HttpPool, payload: bytes) -> None:
        self.pool, self.payload = pool, payload

    async def __call__(self) -> str:
        try:
            status, _ = await self.pool.request(self.payload)
        except asyncio.TimeoutError:
            return "timeout"
        except HttpError as exc:
            return type(exc).__name__
        return str(status)


class _GrpcInfer:
    """Sends the one ``ModelInferRequest``; "200" for OK, else the gRPC status code's name."""

    def __init__(self, stub: Any, request: Any, timeout_s: float) -> None:
        import grpc

        self.stub, self.request, self.timeout_s, self.grpc = stub, request, timeout_s, grpc

    async def __call__(self) -> str:
        try:
            await self.stub.ModelInfer(self.request, timeout=self.timeout_s)
        except self.grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return "200"


class _Client:
    """Sends the one request (``infer()`` gives its status) and times each answer."""

    def __init__(self, infer: Any, where: str) -> None:
        self.infer, self.where = infer, where

    async def send(self, scheduled: float) -> tuple[str, float]:
        """(status, latency in ms from ``scheduled``, a loop time)."""
        status = await self.infer()
        return status, (asyncio.get_running_loop().time() - scheduled) * 1000.0

    async def warm_up(self, count: int) -> float:
        """The median latency (ms) of ``count`` requests one after another; all must pass."""
        loop = asyncio.get_running_loop()
        latencies = []
        for _ in range(count):
            status, ms = await self.send(loop.time())
            if status != "200":
                raise InputError(f"{self.where} answered {status} during warm-up; is it up?")
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

    async def closed_loop(
        self, concurrency: int, duration_s: float
    ) -> tuple[list[tuple[str, float]], float]:
        """``concurrency`` requests in flight for ``duration_s``, each sent as the one before it
        is answered: each answer's (status, latency) and the seconds the run took."""
        loop = asyncio.get_running_loop()
        answers: list[tuple[str, float]] = []
        start = loop.time()
        end = start + duration_s

        async def worker() -> None:
            while loop.time() < end:
                answers.append(await self.send(loop.time()))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return answers, loop.time() - start


def summarize(
    target: float | None,
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


async def _closed_point(client: _Client, settings: LoadTestSettings, concurrency: int) -> LoadPoint:
    answers, span_s = await client.closed_loop(concurrency, settings.duration_s)
    point = summarize(None, settings.duration_s, answers, span_s, None)
    point = LoadPoint(**{**point.__dict__, "concurrency": concurrency})
    p99 = point.latency_ms.p99 if point.latency_ms else float("nan")
    log.info(
        "concurrency %d: %.1f answers/s, p99 %.2f ms, errors %s",
        concurrency,
        point.achieved_qps,
        p99,
        point.errors or "none",
    )
    return point


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


async def _get_json(pool: HttpPool, path: str) -> dict[str, Any]:
    where = f"http://{pool.address}{path}"
    try:
        status, body = await pool.request(encode_request("GET", pool.address, path))
    except (HttpError, asyncio.TimeoutError) as exc:
        raise InputError(f"cannot reach {where}: {exc!r}") from exc
    text = body.decode(errors="replace")
    if status != 200:
        raise InputError(f"GET {where} answered {status}: {text[:300]}")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"GET {where} did not answer JSON: {text[:300]}") from exc
    return data if isinstance(data, dict) else {}


async def _points(client: _Client, settings: LoadTestSettings) -> list[LoadPoint]:
    base_ms = await client.warm_up(settings.warmup_requests)
    if settings.concurrency:
        return [await _closed_point(client, settings, c) for c in settings.concurrency]
    targets = settings.targets
    if targets is None:
        return await _search(client, settings, base_ms)
    return [await _point(client, settings, q) for q in targets]


async def _load_test_http(settings: LoadTestSettings) -> tuple[dict[str, Any], list[LoadPoint]]:
    path = f"/v2/models/{settings.model_name}"
    pool = HttpPool(settings.address, settings.timeout_s)
    try:
        metadata = await _get_json(pool, path)
        body, headers = encode_infer_request(_feeds(settings, metadata), binary=settings.binary)
        payload = encode_request("POST", settings.address, f"{path}/infer", body, headers)
        client = _Client(_HttpInfer(pool, payload), f"http://{settings.address}{path}")
        return metadata, await _points(client, settings)
    finally:
        pool.close()


def _grpc_modules() -> tuple[ModuleType, ModuleType, ModuleType]:
    try:
        import grpc
        from tritonclient.grpc import service_pb2, service_pb2_grpc
    except ImportError as exc:
        raise BackendUnavailable(
            f"edgeport bench --protocol grpc needs grpcio and tritonclient[grpc] ({exc}): "
            "pip install 'edgeport-runtime[serve]'"
        ) from exc
    return grpc, service_pb2, service_pb2_grpc


async def _load_test_grpc(settings: LoadTestSettings) -> tuple[dict[str, Any], list[LoadPoint]]:
    grpc, service_pb2, service_pb2_grpc = _grpc_modules()
    name, where = settings.model_name, f"gRPC {settings.address}"
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    async with grpc.aio.insecure_channel(settings.address, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            reply = await stub.ModelMetadata(
                service_pb2.ModelMetadataRequest(name=name), timeout=settings.timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise InputError(f"cannot get model {name!r} from {where}: {exc.details()}") from exc
        metadata = {
            "name": reply.name,
            "platform": reply.platform,
            **{
                key: [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in tensors
                ]
                for key, tensors in (("inputs", reply.inputs), ("outputs", reply.outputs))
            },
        }
        request = service_pb2.ModelInferRequest(model_name=name)
        for tensor_name, array in _feeds(settings, metadata).items():
            request.inputs.add(
                name=tensor_name, datatype=datatype(array.dtype.name), shape=list(array.shape)
            )
            request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
        client = _Client(_GrpcInfer(stub, request, settings.timeout_s), where)
        return metadata, await _points(client, settings)


def load_test(settings: LoadTestSettings) -> LoadTestResult:
    """Run the load test ``settings`` describe against a running server."""
    from edgeport.runtime.envinfo import collect_environment

    run = _load_test_grpc if settings.protocol == "grpc" else _load_test_http
    metadata, points = asyncio.run(run(settings))
    return LoadTestResult(
        settings=settings,
        model=metadata,
        points=points,
        environment=collect_environment(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


# -- reports ------------------------------------------------------------------------------------

PERCENTILES = ("p50", "p90", "p99")


def _percentiles(stats: LatencyStats | None) -> list[str]:
    return [fmt_fixed(None if stats is None else getattr(stats, q), 2) for q in PERCENTILES]


def _errors(point: LoadPoint) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(point.errors.items())) or "-"


def loadtest_markdown(result: LoadTestResult) -> str:
    """The points as a table, and the highest passing QPS."""
    s = result.settings
    bound = f"{s.latency_bound_ms:g} ms" if s.latency_bound_ms else "none"
    tensors = "raw contents" if s.protocol == "grpc" else "binary" if s.binary else "JSON"
    if s.concurrency:
        return _closed_loop_markdown(result, tensors)
    lines = [
        f"## Load test: {s.url} ({s.protocol})",
        "",
        f"Server scenario (Poisson arrivals, open loop), {s.duration_s:g} s per point, "
        f"{tensors} tensors, p99 bound {bound}.",
        "",
    ]
    rows = []
    for p in result.points:
        passed = "-" if p.passed is None else PASS_MARK if p.passed else "no"
        rows.append(
            [
                fmt_fixed(p.target_qps or 0, 1),
                str(p.sent),
                fmt_fixed(p.achieved_qps, 1),
                *_percentiles(p.latency_ms),
                _errors(p),
                passed,
            ]
        )
    header = ("target QPS", "sent", "achieved QPS", "p50 ms", "p90 ms", "p99 ms", "errors")
    lines += markdown_table((*header, "passed"), rows)
    if s.latency_bound_ms:
        best = result.best_qps
        lines += [
            "",
            f"Highest QPS with p99 <= {bound}: " + ("none" if best is None else fmt_fixed(best, 1)),
        ]
    return "\n".join(lines) + "\n"


def _closed_loop_markdown(result: LoadTestResult, tensors: str) -> str:
    s = result.settings
    lines = [
        f"## Load test: {s.url} ({s.protocol})",
        "",
        f"Closed loop (each request sent when the one before it is answered), "
        f"{s.duration_s:g} s per point, {tensors} tensors.",
        "",
    ]
    rows = [
        [
            str(p.concurrency),
            str(p.ok),
            fmt_fixed(p.achieved_qps, 1),
            *_percentiles(p.latency_ms),
            _errors(p),
        ]
        for p in result.points
    ]
    header = ("concurrency", "answers", "answers/s", "p50 ms", "p90 ms", "p99 ms", "errors")
    lines += markdown_table(header, rows)
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
