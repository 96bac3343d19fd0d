"""``edgeport serve``: any model edgeport loads, served with the Open Inference Protocol
(KServe v2), as Triton's clients speak it: in one process over HTTP and gRPC, or on Ray Serve.

- :mod:`settings`: ``ModelSettings`` (one model: threads, batching, limits, replicas) and
  ``ServeSettings`` (the server: models, ports, Ray). No Ray.
- :mod:`protocol`: the one OIP codec (JSON, binary tensor data, gRPC messages), for servers and
  clients; :mod:`model_config`: Triton's model configuration, also for ``--triton-repo``.
- :mod:`batching`: which concurrent requests share one ``Model.infer`` call, and the batcher
  that runs them in a bounded pool of threads.
- :mod:`endpoints`: the endpoints, free of any web framework; :mod:`metrics`: Prometheus.
- :mod:`server`: the one-process server, with :mod:`http_server` (aiohttp) and
  :mod:`grpc_server` (grpc.aio) as its front ends.
- :mod:`app`: the Ray Serve deployments; :mod:`launch`: start or join a cluster and run them.

The server libraries are an optional dependency (``pip install 'edgeport-runtime[serve]'``),
Ray another (``[ray]``): each is imported only by the modules that need it, when called.
"""
