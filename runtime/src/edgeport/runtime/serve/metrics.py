"""Prometheus metrics of the served models: the same three in both ways of serving.

- ``edgeport_requests_total{model, endpoint, protocol, status}``: requests answered (a 503 of a
  full queue included);
- ``edgeport_request_latency_ms{model, endpoint}``: a histogram of the time from a request's
  arrival to its answer;
- ``edgeport_batch_size{model}``: a histogram of samples (axis 0) per ``Model.infer`` call.

One process (:class:`PrometheusMetrics`, ``prometheus_client``) exports them at ``/metrics`` on
the HTTP port, with ``edgeport_queue_waiting{model}`` (requests waiting for a call). On Ray Serve
(:class:`RayMetrics`, ``ray.util.metrics``) each node's metrics port exports them with Ray's
``ray_`` prefix, beside Serve's own ``ray_serve_*`` (its proxy's 503s never reach a replica).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

LATENCY_BOUNDARIES_MS = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3]
BATCH_BOUNDARIES = [float(2**i) for i in range(10)]  # 1 .. 512
REQUESTS_HELP = "requests answered, by model, endpoint, protocol and status"
LATENCY_HELP = "time from a request's arrival to its answer (ms)"
BATCH_HELP = "samples (axis 0) per Model.infer call, after dynamic batching"


class ServeMetrics(Protocol):
    """What the endpoints report: each request's answer and each call's size."""

    def request(self, endpoint: str, status: int, seconds: float, protocol: str = "http") -> None:
        """One answered request."""

    def call(self, samples: int) -> None:
        """One ``Model.infer`` call of ``samples`` samples."""


class PrometheusMetrics:
    """The metrics of every model of one process, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = ("model", "endpoint", "protocol", "status")
        self.requests = Counter("edgeport_requests", REQUESTS_HELP, labels, registry=self.registry)
        self.latency = Histogram(
            "edgeport_request_latency_ms",
            LATENCY_HELP,
            ("model", "endpoint"),
            buckets=LATENCY_BOUNDARIES_MS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "edgeport_batch_size",
            BATCH_HELP,
            ("model",),
            buckets=BATCH_BOUNDARIES,
            registry=self.registry,
        )
        self.waiting = Gauge(
            "edgeport_queue_waiting",
            "requests waiting for a Model.infer call",
            ("model",),
            registry=self.registry,
        )

    def model(self, name: str) -> ModelMetrics:
        """The metrics of model ``name``."""
        return ModelMetrics(self, name)

    def watch_queue(self, name: str, waiting: Callable[[], int]) -> None:
        """Report ``waiting()`` (model ``name``'s queue length) at each scrape."""
        self.waiting.labels(name).set_function(waiting)

    def exposition(self) -> tuple[bytes, str]:
        """The text Prometheus scrapes, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class ModelMetrics:
    """One model's children of :class:`PrometheusMetrics` (label lookups cached)."""

    def __init__(self, metrics: PrometheusMetrics, name: str) -> None:
        self.metrics, self.name = metrics, name
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[str, Any] = {}
        self._batch = metrics.batch.labels(name)

    def request(self, endpoint: str, status: int, seconds: float, protocol: str = "http") -> None:
        key = (endpoint, protocol, status)
        counter = self._requests.get(key)
        if counter is None:
            counter = self.metrics.requests.labels(self.name, endpoint, protocol, str(status))
            self._requests[key] = counter
        counter.inc()
        latency = self._latency.get(endpoint)
        if latency is None:
            latency = self._latency[endpoint] = self.metrics.latency.labels(self.name, endpoint)
        latency.observe(seconds * 1000.0)

    def call(self, samples: int) -> None:
        self._batch.observe(samples)


class RayMetrics:
    """The metrics of one Ray Serve replica (made inside it: Ray metrics are per process)."""

    def __init__(self, model: str) -> None:
        from ray.util.metrics import Counter, Histogram

        self.model = model
        self.requests = Counter(
            "edgeport_requests",
            description=REQUESTS_HELP,
            tag_keys=("model", "endpoint", "protocol", "status"),
        )
        self.latency = Histogram(
            "edgeport_request_latency_ms",
            description=LATENCY_HELP,
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("model", "endpoint"),
        )
        self.batch = Histogram(
            "edgeport_batch_size",
            description=BATCH_HELP,
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("model",),
        )

    def request(self, endpoint: str, status: int, seconds: float, protocol: str = "http") -> None:
        tags = {"model": self.model, "endpoint": endpoint}
        self.requests.inc(tags={**tags, "protocol": protocol, "status": str(status)})
        self.latency.observe(seconds * 1000.0, tags=tags)

    def call(self, samples: int) -> None:
        self.batch.observe(samples, tags={"model": self.model})
