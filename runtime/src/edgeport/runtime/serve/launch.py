"""Start (or join) a Ray cluster and run ``edgeport serve``'s applications on Ray Serve.

``serve_models(settings)`` returns once every model answers; ``stop(served)`` removes what it
started: the whole local cluster it made, or only its model applications on a cluster it
joined. Ray is imported here only when asked for, so the runtime installs without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from edgeport.runtime.errors import BackendUnavailable, ConfigError, ModelLoadError
from edgeport.runtime.serve.settings import ROOT_APP, ServeSettings
from edgeport.runtime.source import resolve_source

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install 'edgeport-runtime[serve]'"


def require_ray() -> ModuleType:
    """The ``ray`` module with Serve, or a BackendUnavailable naming the extra to install."""
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"edgeport serve runs on Ray Serve, which is not installed ({exc}): {INSTALL_HINT}"
        ) from exc
    return ray


@dataclass(frozen=True)
class Served:
    """What :func:`serve_models` started: the URL, the Prometheus endpoint (None when unknown)
    and whether it started the cluster (then :func:`stop` shuts it down)."""

    settings: ServeSettings
    url: str
    metrics_url: str | None
    started_cluster: bool

    def model_url(self, name: str) -> str:
        return f"{self.url}/v2/models/{name}"


def start_cluster(settings: ServeSettings, system_config: dict[str, Any] | None = None) -> bool:
    """Join ``settings.ray_address`` or start a local cluster (unless this process already has
    one); True when a cluster was started here."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if settings.ray_address is not None:
        ray.init(address=settings.ray_address, include_dashboard=False)
        return False
    ray.init(
        address="local",
        num_cpus=settings.num_cpus,
        include_dashboard=False,
        _metrics_export_port=settings.metrics_port,
        _system_config=system_config,
    )
    return True


def _check_resources(settings: ServeSettings, cluster_cpus: float) -> None:
    needed = sum(m.cpus * (m.min_replicas or m.replicas) for m in settings.models)
    if needed > cluster_cpus:
        raise ConfigError(
            f"the replicas need {needed} CPUs (threads per replica x replicas, summed over the "
            f"models) but the cluster has {cluster_cpus:g}; lower --replicas or --threads"
        )


def metrics_url(local: bool) -> str | None:
    """The Prometheus endpoint of the first live node's Ray metrics agent (on loopback for a
    local cluster)."""
    ray = require_ray()
    for node in ray.nodes():
        port = node.get("MetricsExportPort")
        if node.get("Alive") and port:
            host = "127.0.0.1" if local else node.get("NodeManagerAddress", "127.0.0.1")
            return f"http://{host}:{port}/metrics"
    return None


def _run_apps(settings: ServeSettings) -> None:
    from ray import serve

    from edgeport.runtime.serve.app import model_app, root_app

    apps = [(model_app(m), m.app_name, m.route) for m in settings.models]
    if ROOT_APP not in serve.status().applications:
        apps.append((root_app(), ROOT_APP, "/"))
    try:
        run_many = getattr(serve, "run_many", None)  # newer Ray: all applications at once
        if run_many is not None:
            run_many([serve.RunTarget(a, name=n, route_prefix=r) for a, n, r in apps])
        else:
            for app, name, route in apps:
                serve.run(app, name=name, route_prefix=route)
    except RuntimeError as exc:  # Serve's report of replicas that failed to start
        raise ModelLoadError(f"the model replicas failed to start: {exc}") from exc


def serve_models(settings: ServeSettings, system_config: dict[str, Any] | None = None) -> Served:
    """Serve every model of ``settings``; returns when all answer (``system_config``: Ray's
    internal settings of a new local cluster, e.g. a shorter metrics report interval)."""
    for model in settings.models:
        resolve_source(model.path)  # a missing or unreadable model fails here, not in a replica
    ray = require_ray()
    started = start_cluster(settings, system_config)
    try:
        _check_resources(settings, ray.cluster_resources().get("CPU", 0.0))
        from ray import serve

        serve.start(
            http_options={
                "host": settings.host,
                "port": settings.port,
                "request_timeout_s": settings.request_timeout_s,
            }
        )
        _run_apps(settings)
    except BaseException:  # Ctrl-C or a failure while starting: leave nothing behind
        stop(Served(settings, settings.url, None, started))
        raise
    return Served(settings, settings.url, metrics_url(started), started)


def stop(served: Served) -> None:
    """Remove the model applications (each replica answers the requests it has, for at most
    ``GRACEFUL_SHUTDOWN_S``, while Serve's proxy refuses new ones), then shut down the local
    cluster :func:`serve_models` started; a cluster it joined keeps running."""
    ray = require_ray()
    from ray import serve

    running = serve.status().applications
    for model in served.settings.models:
        if model.app_name in running:
            serve.delete(model.app_name)  # blocks until its replicas have drained
    if served.started_cluster:
        serve.shutdown()
        ray.shutdown()
