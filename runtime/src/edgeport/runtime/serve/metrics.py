"""Prometheus metrics of the served models, through Ray's metrics (``ray.util.metrics``).

Ray exports them on each node's metrics port with a ``ray_`` prefix:
``ray_edgeport_requests_total{model, endpoint, status}``,
``ray_edgeport_request_latency_ms_bucket{model, endpoint, le}`` (a histogram) and
``ray_edgeport_batch_size_bucket{model, le}`` (samples per ``Model.infer`` call). Serve's own
metrics (``ray_serve_*``) sit beside them, among them the requests its proxy refused with 503,
which never reach a replica.
"""

from __future__ import annotations

LATENCY_BOUNDARIES_MS = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3]
BATCH_BOUNDARIES = [float(2**i) for i in range(10)]  # 1 .. 512


class ServeMetrics:
    """The counters and histograms of one replica (made inside the replica: Ray metrics are
    per process)."""

    def __init__(self, model: str) -> None:
        from ray.util.metrics import Counter, Histogram

        self.model = model
        self.requests = Counter(
            "edgeport_requests",
            description="HTTP requests answered by a replica, by model, endpoint and status",
            tag_keys=("model", "endpoint", "status"),
        )
        self.latency = Histogram(
            "edgeport_request_latency_ms",
            description="time from a request's arrival at a replica to its answer (ms)",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("model", "endpoint"),
        )
        self.batch = Histogram(
            "edgeport_batch_size",
            description="samples (axis 0) per Model.infer call, after dynamic batching",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("model",),
        )

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        tags = {"model": self.model, "endpoint": endpoint}
        self.requests.inc(tags={**tags, "status": str(status)})
        self.latency.observe(seconds * 1000.0, tags=tags)

    def call(self, samples: int) -> None:
        self.batch.observe(samples, tags={"model": self.model})
