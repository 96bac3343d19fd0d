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

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import Response

from edgeport.runtime.serve.endpoints import Reply, RootEndpoint, open_endpoint, read_limited
from edgeport.runtime.serve.metrics import RayMetrics
from edgeport.runtime.serve.settings import MODEL_APP_PREFIX, ModelSettings

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_S = 10.0  # a replica being removed answers what it has for this long


def _response(reply: Reply) -> Response:
    return Response(
        reply.body,
        status_code=reply.status,
        media_type=reply.content_type,
        headers=dict(reply.headers),
    )


def _reader(request: Request) -> Any:
    async def read(limit: int) -> bytes:
        return await read_limited(request.stream(), limit)

    return read


@serve.deployment
class ModelServer:
    """One replica of one model: loads it and answers its endpoints, the same code as the
    one-process server's, concurrent infer requests merged by the endpoint's batcher."""

    def __init__(self, settings: ModelSettings) -> None:
        self.endpoint = open_endpoint(settings, RayMetrics(settings.name))

    async def __call__(self, request: Request) -> Response:
        reply = await self.endpoint.handle(
            request.method,
            request.url.path,
            request.query_params,
            request.headers,
            _reader(request),
        )
        return _response(reply)

    def check_health(self) -> None:
        if not self.endpoint.ready:
            raise RuntimeError(f"the model {self.endpoint.model.path} is closed")


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=64)
class RootServer:
    """The server's own endpoints; the models served are the Serve applications named
    ``edgeport-model-NAME`` on the cluster."""

    def __init__(self) -> None:
        self.endpoint = RootEndpoint(self._models)

    async def __call__(self, request: Request) -> Response:
        return _response(await self.endpoint.handle(request.method, request.url.path))

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
        "graceful_shutdown_timeout_s": GRACEFUL_SHUTDOWN_S,
        "graceful_shutdown_wait_loop_s": 0.5,
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
