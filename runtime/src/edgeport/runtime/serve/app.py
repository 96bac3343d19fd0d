"""The Ray Serve deployments of ``edgeport serve``: one application per model (at
``/v2/models/{name}``, so Serve's proxy routes each request straight to a replica of its model)
and one root application (``/v2``, ``/v2/health/*`` and unknown models).

This module imports Ray; :mod:`edgeport.runtime.serve.launch` imports it only after checking
that Ray is installed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from edgeport.runtime.feeds import sample_count
from edgeport.runtime.model import load
from edgeport.runtime.serve.batching import Result, can_merge, infer_batches
from edgeport.runtime.serve.endpoints import ModelEndpoint, RootEndpoint
from edgeport.runtime.serve.metrics import ServeMetrics
from edgeport.runtime.serve.settings import MODEL_APP_PREFIX, ModelSettings

log = logging.getLogger(__name__)


@serve.deployment
class ModelServer:
    """One replica of one model: loads it, answers its endpoints and merges concurrent infer
    requests into one ``Model.infer`` call (``@serve.batch``)."""

    def __init__(self, settings: ModelSettings) -> None:
        self.model = load(
            settings.path,
            backend=settings.backend,
            precision=settings.precision,
            device=settings.device,
            threads=settings.threads,
            allow_failed=settings.allow_failed,
        )
        self.metrics = ServeMetrics(settings.name)
        self.limit = min(settings.max_batch, self.model.batch_range.max)
        self.batching = self.limit > 1 and can_merge(self.model.inputs, self.model.outputs)
        self._merged.set_max_batch_size(self.limit)  # type: ignore[attr-defined]
        self._merged.set_batch_wait_timeout_s(settings.batch_wait_ms / 1000.0)  # type: ignore[attr-defined]
        self.endpoint = ModelEndpoint(self.model, settings, self._infer, self.metrics)
        log.info(
            "%s: %s on %s, batching %s",
            settings.name,
            self.model.path,
            self.model.backend,
            f"up to {self.limit} samples" if self.batching else "off",
        )

    async def __call__(self, request: Request) -> Response:
        return await self.endpoint.handle(request)

    async def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = sample_count(feeds)
        if not self.batching or count >= self.limit:
            self.metrics.call(count)
            return await asyncio.to_thread(self.model.infer, feeds)
        result = await self._merged(feeds)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)  # settings applied in __init__
    async def _merged(self, items: list[dict[str, np.ndarray]]) -> list[Result]:
        return await asyncio.to_thread(
            infer_batches, self.model.infer, items, self.limit, self.metrics.call
        )

    def check_health(self) -> None:
        if self.model.closed:
            raise RuntimeError(f"the model {self.model.path} is closed")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class RootServer:
    """The server's own endpoints; the models served are the Serve applications named
    ``edgeport-model-NAME`` on the cluster."""

    def __init__(self) -> None:
        self.endpoint = RootEndpoint(self._models)

    async def __call__(self, request: Request) -> Response:
        return await self.endpoint.handle(request)

    async def _models(self) -> dict[str, bool]:
        status = await asyncio.to_thread(serve.status)
        return {
            name[len(MODEL_APP_PREFIX) :]: app.status == "RUNNING"
            for name, app in status.applications.items()
            if name.startswith(MODEL_APP_PREFIX)
        }


def model_app(settings: ModelSettings) -> Application:
    """The Serve application of one model, with its replicas, backpressure and health check."""
    options: dict[str, Any] = {
        "name": "model",
        "max_ongoing_requests": settings.ongoing,
        "max_queued_requests": settings.max_queued_requests,
        "ray_actor_options": {"num_cpus": settings.cpus, "num_gpus": settings.gpus},
        "health_check_period_s": settings.health_check_period_s,
        "logging_config": {"enable_access_log": settings.access_log},
    }
    if settings.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": settings.min_replicas,
            "max_replicas": settings.max_replicas,
            "target_ongoing_requests": max(2, settings.max_batch),
        }
    else:
        options["num_replicas"] = settings.replicas
    return ModelServer.options(**options).bind(settings)  # type: ignore[attr-defined]


def root_app() -> Application:
    return RootServer.bind()  # type: ignore[attr-defined]
