"""``edgeport serve MODEL``: serve any model on Ray Serve with the Open Inference Protocol.

Starts a local Ray cluster (or joins one with ``--ray-address``), runs the model's replicas
behind Serve's HTTP proxy and blocks until Ctrl-C, then removes what it started. Ray is
imported only when the command runs: without it, the command says which extra to install.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from edgeport.runtime.cli.options import add_load_options
from edgeport.runtime.serve.settings import ModelSettings, ServeSettings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (Open Inference Protocol / KServe v2) on Ray Serve",
        description=(
            "Serve MODEL (a bundle directory, an .onnx file or a TensorRT engine) on Ray Serve "
            "with the Open Inference Protocol that Triton's clients speak: GET /v2, "
            "/v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/ready; POST "
            "/v2/models/NAME/infer (JSON or binary tensors) and, for image classifiers, "
            "/v2/models/NAME/classify (image bytes or multipart files, ?top_k=). Concurrent "
            "requests are merged into one call along axis 0 (--max-batch). Blocks until Ctrl-C."
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
        "--gpus-per-replica", type=float, default=0.0, help="GPUs Ray reserves per replica (0)"
    )
    parser.add_argument("--replicas", type=int, default=1, help="fixed replica count (1)")
    parser.add_argument("--min-replicas", type=int, help="autoscaling: at least this many")
    parser.add_argument("--max-replicas", type=int, help="autoscaling: at most this many")
    parser.add_argument(
        "--max-batch",
        type=int,
        default=8,
        help="most samples merged from concurrent requests into one call (8; 1 = off)",
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=2.0, help="how long a batch waits to fill (2)"
    )
    parser.add_argument(
        "--max-ongoing-requests",
        type=int,
        help="requests one replica works on at once (default: 2 x max-batch, at least 8)",
    )
    parser.add_argument(
        "--max-queued-requests",
        type=int,
        default=64,
        help="requests waiting for a replica before Serve answers 503 (64; -1: no bound)",
    )
    parser.add_argument(
        "--max-body-mb", type=float, default=64.0, help="largest request body; above: 413 (64)"
    )
    parser.add_argument(
        "--no-access-log", action="store_true", help="no log line per request (saves CPU)"
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (8000)")
    parser.add_argument("--ray-address", help="join this Ray cluster (default: start a local one)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port of the local cluster")


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
        max_ongoing_requests=args.max_ongoing_requests,
        max_queued_requests=args.max_queued_requests,
        max_body_mb=args.max_body_mb,
        access_log=not args.no_access_log,
    )
    return ServeSettings(
        models=(model,),
        host=args.host,
        port=args.port,
        ray_address=args.ray_address,
        num_cpus=args.num_cpus,
        metrics_port=args.metrics_port,
    )


def run(args: argparse.Namespace) -> int:
    from edgeport.runtime.serve.launch import require_ray, serve_models, stop

    settings = settings_from_args(args)
    require_ray()
    print(f"starting Ray Serve for {settings.models[0].path} ...", file=sys.stderr)
    served = serve_models(settings)
    name = settings.models[0].name
    if args.verbose:
        print(json.dumps(settings.to_dict(), indent=2), file=sys.stderr)
    print(f"serving {name} at {served.model_url(name)}", flush=True)
    print(f"metrics: {served.metrics_url or 'see the Ray cluster'}; Ctrl-C stops", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop cleans up too
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        stop(served)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
