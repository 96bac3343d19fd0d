"""``edgeport serve``: any model edgeport loads, served on Ray Serve with the Open Inference
Protocol (KServe v2), as Triton's clients speak it.

- :mod:`settings`: ``ModelSettings`` (one model: replicas, threads, batching, limits) and
  ``ServeSettings`` (the server: models, ports, cluster). No Ray.
- :mod:`protocol`: the one OIP codec (JSON and binary tensor data), for server and clients.
- :mod:`batching`: which concurrent requests share one ``Model.infer`` call, merged on axis 0.
- :mod:`endpoints`: the HTTP endpoints on starlette requests.
- :mod:`metrics`: request, latency and batch-size metrics through ``ray.util.metrics``.
- :mod:`app`: the Ray Serve deployments; :mod:`launch`: start or join a cluster and run them.

Ray is an optional dependency (``pip install 'edgeport-runtime[serve]'``): only ``app`` and
``launch`` (when called) import it.
"""
