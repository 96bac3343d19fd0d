"""What ``edgeport serve`` serves and how: one :class:`ModelSettings` per model, and the
:class:`ServeSettings` of the server (ports; for Ray Serve, the cluster). Plain dataclasses with
no Ray in them, checked when made, so a bad flag fails before a server starts."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeport.runtime.backends.cuda import parse_device
from edgeport.runtime.backends.registry import BACKENDS
from edgeport.runtime.bundle import PRECISIONS
from edgeport.runtime.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MODEL_APP_PREFIX = "edgeport-model-"  # Serve application of model NAME: edgeport-model-NAME
ROOT_APP = "edgeport"  # the Serve application answering /v2, /v2/health/* and unknown models


def _positive(value: float | None, what: str, problems: list[str], *, integer: bool) -> None:
    if value is None:
        return
    bad_type = isinstance(value, bool) or not isinstance(value, int if integer else int | float)
    if bad_type or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        problems.append(f"{what} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class ModelSettings:
    """One served model: where it is, how it is loaded, its batching and, on Ray Serve, its
    replicas.

    ``max_batch`` is the most samples (axis 0) one ``Model.infer`` call gets when concurrent
    requests are merged (1: no merging); a free instance takes what waits at once, and
    ``batch_wait_ms`` > 0 also holds a lone request that long for company. ``instances``: calls
    run at once (threads). ``max_queued_requests``: requests waiting for a call before the next
    is answered 503 (-1: no bound). On Ray Serve, ``replicas`` is a fixed count and
    ``min_replicas``/``max_replicas`` turn on Serve's autoscaling instead;
    ``max_ongoing_requests`` bounds the requests one replica works on at once (default: twice
    ``max_batch``, at least 8), and past it and ``max_queued_requests`` Serve answers 503.
    ``access_log``: Serve logs each request.
    """

    path: Path
    name: str = ""  # default: the bundle directory's or file's name without suffix
    backend: str = "auto"
    precision: str | None = None
    device: str | None = None  # as load(): None (any), "cpu", "cuda", "cuda:N"
    allow_failed: bool = False  # as load(): serve an asked-for artifact whose parity failed
    threads: int | None = None  # ONNX Runtime threads per replica (and Ray CPUs reserved)
    gpus: float = 0.0  # GPUs Ray reserves per replica (a fraction shares one)
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    max_batch: int = 8
    batch_wait_ms: float = 0.0
    instances: int = 1
    max_ongoing_requests: int | None = None
    max_queued_requests: int = 64
    max_body_mb: float = 64.0
    health_check_period_s: float = 10.0
    access_log: bool = True  # Serve's log line per request (costs CPU under load)

    def __post_init__(self) -> None:
        path = Path(self.path).expanduser().absolute()  # replicas may run in another directory
        object.__setattr__(self, "path", path)
        if not self.name:
            model_file = path.suffix.lower() in (".onnx", ".engine", ".plan")
            object.__setattr__(self, "name", path.stem if model_file else path.name)
        problems = self._problems()
        if problems:
            raise ConfigError(f"invalid serve settings for {self.path}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        if not NAME_RE.match(self.name):
            problems.append(
                f"model name {self.name!r} must be 1-64 letters, digits, '_', '.' or '-' (give "
                "--name)"
            )
        if self.backend != "auto" and self.backend not in BACKENDS:
            problems.append(f"backend must be auto or one of {BACKENDS}, got {self.backend!r}")
        try:
            parse_device(self.device)
        except ConfigError as exc:
            problems.append(str(exc))
        if isinstance(self.gpus, bool) or not self.gpus >= 0:
            problems.append(f"gpus must be >= 0, got {self.gpus!r}")
        if self.precision is not None and self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for what in (
            "threads",
            "replicas",
            "min_replicas",
            "max_replicas",
            "max_batch",
            "instances",
        ):
            _positive(getattr(self, what), what, problems, integer=True)
        _positive(self.max_ongoing_requests, "max_ongoing_requests", problems, integer=True)
        _positive(self.max_body_mb, "max_body_mb", problems, integer=False)
        _positive(self.health_check_period_s, "health_check_period_s", problems, integer=False)
        if isinstance(self.batch_wait_ms, bool) or not self.batch_wait_ms >= 0:
            problems.append(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms!r}")
        if self.max_queued_requests != -1:
            _positive(
                self.max_queued_requests, "max_queued_requests (or -1)", problems, integer=True
            )
        if (self.min_replicas is None) != (self.max_replicas is None):
            problems.append("autoscaling needs both min_replicas and max_replicas")
        elif self.autoscaling and self.min_replicas > self.max_replicas:  # type: ignore[operator]
            problems.append(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}"
            )
        if self.max_ongoing_requests is not None and self.max_ongoing_requests < self.max_batch:
            problems.append(
                f"max_ongoing_requests {self.max_ongoing_requests} is below max_batch "
                f"{self.max_batch}: a replica could never gather a full batch"
            )
        return problems

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None

    @property
    def ongoing(self) -> int:
        """``max_ongoing_requests``, or its default."""
        return self.max_ongoing_requests or max(8, 2 * self.max_batch)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))

    @property
    def cpus(self) -> int:
        """Ray CPUs reserved per replica: its threads, else 1."""
        return self.threads or 1

    @property
    def app_name(self) -> str:
        return MODEL_APP_PREFIX + self.name

    @property
    def route(self) -> str:
        return f"/v2/models/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["max_ongoing_requests"] = self.ongoing
        return data


@dataclass(frozen=True)
class ServeSettings:
    """The server: its models, the HTTP port and the gRPC port (None: no gRPC) on ``host``, and
    how long a stop waits for requests in flight (``drain_s``). One process unless ``ray`` (or
    ``ray_address``): then Ray Serve, on the cluster at ``ray_address`` or a new local one of
    ``num_cpus`` CPUs (default all) with its Prometheus endpoint on ``metrics_port``; Ray's proxy
    answers 408 to a request that has no answer after ``request_timeout_s`` (a replica that died
    while working on it), so no client waits forever."""

    models: tuple[ModelSettings, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001
    drain_s: float = 10.0
    ray: bool = False
    ray_address: str | None = None
    num_cpus: int | None = None
    metrics_port: int | None = None  # local cluster only; None: Ray picks one
    request_timeout_s: float = 60.0  # Ray Serve only

    def __post_init__(self) -> None:
        problems = []
        if not self.models:
            problems.append("no model to serve")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            problems.append(f"model names must differ, got {names}")
        for what in ("port", "grpc_port", "metrics_port"):
            value = getattr(self, what)
            if value is not None and (isinstance(value, bool) or not 0 < value < 65536):
                problems.append(f"{what} must be a TCP port (1-65535), got {value!r}")
        _positive(self.num_cpus, "num_cpus", problems, integer=True)
        _positive(self.drain_s, "drain_s", problems, integer=False)
        _positive(self.request_timeout_s, "request_timeout_s", problems, integer=False)
        if self.grpc_port is not None and self.grpc_port == self.port:
            problems.append(f"the HTTP and gRPC ports must differ, both are {self.port}")
        if not self.on_ray and (self.num_cpus or self.metrics_port):
            problems.append(
                "num_cpus and metrics_port configure Ray's cluster (--ray); one process serves "
                "its metrics at /metrics on the HTTP port"
            )
        if self.ray_address is not None and (self.num_cpus or self.metrics_port):
            problems.append(
                "num_cpus and metrics_port configure a new local cluster; a cluster joined "
                "with ray_address keeps its own"
            )
        if problems:
            raise ConfigError("invalid serve settings: " + "; ".join(problems))

    @property
    def on_ray(self) -> bool:
        return self.ray or self.ray_address is not None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def grpc_address(self) -> str | None:
        """HOST:PORT of the gRPC server (None: none)."""
        if self.grpc_port is None:
            return None
        return f"{self.url.removeprefix('http://').rsplit(':', 1)[0]}:{self.grpc_port}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = [m.to_dict() for m in self.models]
        return data
