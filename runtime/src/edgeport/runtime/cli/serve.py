"""``edgeport serve MODEL``: serve any model with the Open Inference Protocol.

By default one process answers HTTP (``--port``) and gRPC (``--grpc-port``); with ``--ray`` (or
``--ray-address``) the same endpoints run on Ray Serve: a local Ray cluster it starts, or one it
joins. Either way it blocks until SIGINT or SIGTERM, then stops accepting, answers the requests
in flight and removes what it started; a second signal exits at once. The server libraries (and
Ray) are imported only when the command runs: without them, it says which extra to install.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from edgeport.runtime.cli.options import add_load_options
from edgeport.runtime.serve.settings import ModelSettings, ServeSettings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP and gRPC (Open Inference Protocol / KServe v2)",
        description=(
            "Serve MODEL (a bundle directory, an .onnx file or a TensorRT engine) with the Open "
            "Inference Protocol that Triton's clients speak, in one process (HTTP and gRPC) or "
            "on Ray Serve (--ray): GET /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME, "
            "/v2/models/NAME/config, /v2/models/NAME/ready; POST /v2/models/NAME/infer (JSON or "
            "binary tensors) and, for image classifiers, /v2/models/NAME/classify (image bytes "
            "or multipart files, ?top_k=); GET /metrics. Concurrent requests are merged into "
            "one call along axis 0 (--max-batch). Blocks until SIGINT or SIGTERM."
        ),
    )
    parser.add_argument("path", metavar="MODEL", help="bundle directory, .onnx or .engine file")
    parser.add_argument("--name", default="", help="model name in URLs (default: file name)")
    _add_model_options(parser)
    _add_server_options(parser)
    parser.set_defaults(handler=run)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    add_load_options(parser)  # --backend, --precision, --device, --threads (per replica)
    parser.add_argument(
        "--max-batch",
        type=int,
        default=8,
        help="most samples merged from concurrent requests into one call (8; 1 = off)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="how long a lone request waits for company (0: a free instance takes what waits)",
    )
    parser.add_argument(
        "--instances", type=int, default=1, help="Model.infer calls run at once (1)"
    )
    parser.add_argument(
        "--max-queued-requests",
        type=int,
        default=64,
        help="requests waiting for a call before the next is answered 503 (64; -1: no bound)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=64.0, help="largest request body; above: 413 (64)"
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="no log line per request (saves CPU)"
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (8001)")
    parser.add_argument("--no-grpc", action="store_true", help="serve HTTP only")
    parser.add_argument(
        "--drain-s", type=float, default=10.0, help="at a stop, wait this long for requests (10)"
    )
    ray = parser.add_argument_group("Ray Serve (scale-out: several replicas or machines)")
    ray.add_argument("--ray", action="store_true", help="serve on Ray Serve (a local cluster)")
    ray.add_argument("--ray-address", help="serve on Ray Serve, joining this cluster")
    ray.add_argument("--replicas", type=int, default=1, help="fixed replica count (1)")
    ray.add_argument("--min-replicas", type=int, help="autoscaling: at least this many")
    ray.add_argument("--max-replicas", type=int, help="autoscaling: at most this many")
    ray.add_argument(
        "--gpus-per-replica", type=float, default=0.0, help="GPUs Ray reserves per replica (0)"
    )
    ray.add_argument(
        "--max-ongoing-requests",
        type=int,
        help="requests one replica works on at once (default: 2 x max-batch, at least 8)",
    )
    ray.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    ray.add_argument("--metrics-port", type=int, help="Prometheus port of the local cluster")
    ray.add_argument(
        "--request-timeout-s",
        type=float,
        default=60.0,
        help="answer 408 to a request with no answer after this long (60)",
    )


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """The flags as :class:`ServeSettings` (each one checked there)."""
    model = ModelSettings(
        path=args.path,
        name=args.name,
        backend=args.backend,
        precision=args.precision,
        device=args.device,
        threads=args.threads,
        allow_failed=args.allow_failed,
        gpus=args.gpus_per_replica,
        replicas=args.replicas,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        instances=args.instances,
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        max_body_mb=args.max_body_mb,
        access_log=not args.no_access_log,
    )
    return ServeSettings(
        models=(model,),
        host=args.host,
        port=args.port,
        grpc_port=None if args.no_grpc else args.grpc_port,
        drain_s=args.drain_s,
        ray=args.ray,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        metrics_port=args.metrics_port,
        request_timeout_s=args.request_timeout_s,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if args.verbose:
        print(json.dumps(settings.to_dict(), indent=2), file=sys.stderr)
    if settings.on_ray:
        return _run_on_ray(settings)
    from edgeport.runtime.serve.server import Server, require_serve, serve_forever

    require_serve()
    name = settings.models[0].name

    def ready(server: Server) -> None:
        print(f"serving {name} at {server.model_url(name)}", flush=True)
        grpc = settings.grpc_address
        print(f"gRPC: {grpc or 'off'}; metrics: {settings.url}/metrics", flush=True)
        print("SIGINT (Ctrl-C) or SIGTERM stops", flush=True)

    code = serve_forever(settings, ready)
    print("stopped", file=sys.stderr)
    return code


def _run_on_ray(settings: ServeSettings) -> int:
    from edgeport.runtime.serve.launch import require_ray, serve_models, stop

    require_ray()
    print(f"starting Ray Serve for {settings.models[0].path} ...", file=sys.stderr)
    served = serve_models(settings)
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if stopping.is_set():
            os._exit(128 + signum)
        stopping.set()

    # after ray.init, which installs a SIGTERM handler of its own that exits at once
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    name = settings.models[0].name
    print(f"serving {name} at {served.model_url(name)}", flush=True)
    print(f"metrics: {served.metrics_url or 'see the Ray cluster'}", flush=True)
    print("SIGINT (Ctrl-C) or SIGTERM stops", flush=True)
    try:
        while not stopping.wait(3600):
            pass
        print("stopping (a second signal exits at once)", file=sys.stderr)
        stop(served)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("stopped", file=sys.stderr)
    return 0
