"""How much does ``edgeport.runtime.Model.run`` add on top of a bare ONNX Runtime session?

Times ``Model.run`` (input validation + backend dispatch) against a bare
``onnxruntime.InferenceSession.run`` on the same ONNX file, the same thread count and the same
session options, at batch 1, side by side: rounds alternate which one goes first, every call is
timed, and the medians and the per-round paired ratio are printed. The acceptance bar is a ratio
within 1.05.

By default the model is a simple_cnn_bn-shaped network (3x32x32 input, 10 classes, seeded random
weights) built here with the ``onnx`` helper API, so the script depends on neither torch nor the
export code; ``--onnx PATH`` times any other single-input classifier.

    .venv/bin/python benchmarks/runtime_overhead.py [--threads 1] [--rounds 40] [--calls 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def build_small_cnn(path: Path, *, classes: int = 10, channels: int = 3, size: int = 32) -> Path:
    """conv3x3/32-BN-ReLU-maxpool, conv3x3/64-BN-ReLU-maxpool, FC 128, ReLU, FC classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = []

    def add(name: str, *shape: int, scale: float = 0.1, offset: float = 0.0) -> str:
        values = rng.standard_normal(shape) * scale + offset
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
        return name

    nodes = []
    prev, cin = "input", channels
    for i, cout in ((1, 32), (2, 64)):
        w, b = add(f"c{i}w", cout, cin, 3, 3), add(f"c{i}b", cout)
        bn = [add(f"bn{i}s", cout, offset=1.0), add(f"bn{i}b", cout), add(f"bn{i}m", cout)]
        bn.append(add(f"bn{i}v", cout, scale=0.0, offset=1.0))
        nodes += [
            helper.make_node("Conv", [prev, w, b], [f"c{i}"], kernel_shape=[3, 3], pads=[1] * 4),
            helper.make_node("BatchNormalization", [f"c{i}", *bn], [f"n{i}"]),
            helper.make_node("Relu", [f"n{i}"], [f"r{i}"]),
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]),
        ]
        prev, cin = f"p{i}", cout
    flat = 64 * (size // 4) ** 2
    nodes += [
        helper.make_node("Flatten", [prev], ["flat"], axis=1),
        helper.make_node(
            "Gemm", ["flat", add("f1w", 128, flat, scale=0.02), add("f1b", 128)], ["h"], transB=1
        ),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node(
            "Gemm", ["hr", add("f2w", classes, 128), add("f2b", classes)], ["logits"], transB=1
        ),
    ]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", channels, size, size])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    graph = helper.make_graph(nodes, "simple_cnn_bn", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def bare_session(path: Path, threads: int) -> Any:
    """The session a user would write by hand, with the options edgeport sets (so only the
    wrapper differs): ORT_ENABLE_ALL, sequential, ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def time_calls(fn: Callable[[], object], calls: int) -> list[float]:
    out = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        fn()
        out.append((clock() - start) / 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="ONNX file (default: build the small CNN)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both (1)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per round and side")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args(argv)

    import onnxruntime as ort

    from edgeport.runtime import load
    from edgeport.runtime.io import atomic_write_json

    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx or build_small_cnn(Path(tmp) / "simple_cnn_bn.onnx")
        session = bare_session(path, args.threads)
        model = load(path, backend="onnxruntime-cpu", threads=args.threads)
        (model_input,) = session.get_inputs()
        name = model_input.name
        shape = [args.batch, *model_input.shape[1:]]
        batch = np.random.default_rng(1).standard_normal(shape).astype(np.float32)

        def bare() -> np.ndarray:
            return session.run(None, {name: batch})[0]

        def wrapped() -> np.ndarray:
            return model.run(batch)

        if not np.array_equal(bare(), wrapped()):
            print("error: Model.run and the bare session disagree", file=sys.stderr)
            return 1
        load_before = os.getloadavg()
        time_calls(bare, args.warmup)
        time_calls(wrapped, args.warmup)
        bare_all: list[float] = []
        wrapped_all: list[float] = []
        paired: list[float] = []
        for round_index in range(args.rounds):
            order = (bare, wrapped) if round_index % 2 == 0 else (wrapped, bare)
            results = {fn: time_calls(fn, args.calls) for fn in order}
            bare_all += results[bare]
            wrapped_all += results[wrapped]
            paired.append(statistics.median(results[wrapped]) / statistics.median(results[bare]))
        load_after = os.getloadavg()
        model.close()

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    result = {
        "model": str(args.onnx or "simple_cnn_bn (built, 3x32x32, 10 classes)"),
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        "bare_median_us": statistics.median(bare_all),
        "bare_p90_us": pct(bare_all, 90),
        "model_median_us": statistics.median(wrapped_all),
        "model_p90_us": pct(wrapped_all, 90),
        "ratio_of_medians": statistics.median(wrapped_all) / statistics.median(bare_all),
        "paired_ratio_median": statistics.median(paired),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
    }
    print(
        f"bare InferenceSession.run: median {result['bare_median_us']:.1f} us "
        f"(p90 {result['bare_p90_us']:.1f})\n"
        f"edgeport Model.run:        median {result['model_median_us']:.1f} us "
        f"(p90 {result['model_p90_us']:.1f})\n"
        f"ratio Model.run / bare: {result['ratio_of_medians']:.3f} (medians), "
        f"{result['paired_ratio_median']:.3f} (median of per-round ratios); bar: <= 1.05\n"
        f"batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds x {args.calls} calls "
        f"each side; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
