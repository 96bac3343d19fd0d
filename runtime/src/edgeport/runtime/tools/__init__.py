"""The work behind ``edgeport check``, ``bench`` and ``tune``, usable from Python.

``check.check`` judges a model against its reference, ``bench.benchmark`` times every backend
and precision side by side, ``tune.tune`` records the fastest one for ``load(backend="auto")``;
``coldstart``, ``loadgen`` (MLPerf LoadGen) and ``loadtest`` (an HTTP client for Open Inference
Protocol servers) are the benchmark's other modes. Tools depend on the library, never the
library on them.
"""
