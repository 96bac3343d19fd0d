"""The one-process server of ``edgeport serve``: every model loaded once, an aiohttp HTTP server
and a ``grpc.aio`` gRPC server on one asyncio event loop, inference in each model's bounded pool
of threads, Prometheus metrics at ``/metrics``.

:class:`Server` starts and stops it from async code (tests, embedding); :func:`serve_forever`
runs it until SIGINT or SIGTERM, then stops cleanly: the ports stop accepting, requests in
flight are answered (for at most ``drain_s`` seconds), the pools and models are closed, and it
returns 0. A second signal during the stop exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from edgeport.runtime.errors import BackendUnavailable
from edgeport.runtime.serve.endpoints import ModelEndpoint, RootEndpoint, open_endpoint
from edgeport.runtime.serve.settings import ServeSettings

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'edgeport-runtime[serve]'"


def require_serve() -> None:
    """Raise BackendUnavailable naming the extra when a front end's library is missing."""
    try:
        import aiohttp  # noqa: F401
        import grpc  # noqa: F401
        import prometheus_client  # noqa: F401
        import tritonclient.grpc  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"edgeport serve needs its server libraries ({exc}): {INSTALL_HINT}"
        ) from exc


class Server:
    """One process serving ``settings.models`` over HTTP and (unless ``grpc_port`` is None)
    gRPC. ``await start()`` loads the models and opens the ports; ``await stop()`` drains."""

    def __init__(self, settings: ServeSettings) -> None:
        require_serve()
        self.settings = settings
        self.endpoints: dict[str, ModelEndpoint] = {}
        self._runner: Any = None
        self._grpc: Any = None

    @property
    def url(self) -> str:
        return self.settings.url

    def model_url(self, name: str) -> str:
        return f"{self.url}/v2/models/{name}"

    async def _models(self) -> dict[str, bool]:
        return {name: e.ready for name, e in self.endpoints.items()}

    async def start(self) -> None:
        from aiohttp import web

        from edgeport.runtime.serve.grpc_server import make_server
        from edgeport.runtime.serve.http_server import make_app
        from edgeport.runtime.serve.metrics import PrometheusMetrics

        settings = self.settings
        metrics = PrometheusMetrics()
        try:
            for model in settings.models:
                endpoint = open_endpoint(model, metrics.model(model.name))
                metrics.watch_queue(model.name, endpoint.batcher.waiting)
                self.endpoints[model.name] = endpoint
            max_body = max(m.max_body_bytes for m in settings.models)
            app = make_app(self.endpoints, RootEndpoint(self._models), metrics, max_body)
            self._runner = web.AppRunner(
                app, access_log=None, handle_signals=False, shutdown_timeout=settings.drain_s
            )
            await self._runner.setup()
            await web.TCPSite(self._runner, settings.host, settings.port).start()
            if settings.grpc_port is not None:
                self._grpc = make_server(self.endpoints, max_body)
                address = f"{settings.host}:{settings.grpc_port}"
                if self._grpc.add_insecure_port(address) == 0:
                    raise OSError(f"cannot listen for gRPC on {address}")
                await self._grpc.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop accepting, answer what is in flight (at most ``drain_s`` seconds), close."""
        drain = self.settings.drain_s
        stops = []
        if self._grpc is not None:
            stops.append(self._grpc.stop(grace=drain))
        if self._runner is not None:
            stops.append(self._runner.cleanup())
        await asyncio.gather(*stops)
        self._grpc = self._runner = None
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, e.close) for e in self.endpoints.values())
        )
        self.endpoints.clear()


def serve_forever(settings: ServeSettings, on_ready: Callable[[Server], None] | None = None) -> int:
    """Serve until SIGINT or SIGTERM, then stop cleanly and return 0; a second signal while
    stopping exits the process at once (status 128 + the signal's number)."""

    async def main() -> int:
        server = Server(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            if stop.is_set():
                os._exit(128 + signum)
            log.info("%s: stopping (a second signal exits at once)", signal.Signals(signum).name)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        await server.start()
        if on_ready is not None:
            on_ready(server)
        await stop.wait()
        await server.stop()
        return 0

    return _run(main())


def _run(main: Any) -> int:
    """``asyncio.run`` on uvloop where it is installed (less CPU per request)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
