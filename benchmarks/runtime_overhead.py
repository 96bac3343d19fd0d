"""How much do ``Model.infer`` and ``Model.run`` add on top of a bare ONNX Runtime session?

Times ``Model.infer`` (the general call: a dict of named inputs in, a dict of outputs out) and
``Model.run`` (one array in, one out), each with the full input validation, against a bare
``onnxruntime.InferenceSession.run`` on the same ONNX file, the same thread count and the same
session options, at batch 1, side by side: rounds rotate which one goes first, every call is
timed, and the medians and the per-round paired ratios are printed. The acceptance bar is a
ratio within 1.05 for both.

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


def interleaved(
    sides: dict[str, Callable[[], object]], rounds: int, calls: int, warmup: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Every call's time per side, and each side's per-round median over the bare side's;
    rounds rotate which side goes first."""
    for fn in sides.values():
        time_calls(fn, warmup)
    samples: dict[str, list[float]] = {key: [] for key in sides}
    paired: dict[str, list[float]] = {key: [] for key in sides if key != "bare"}
    keys = list(sides)
    for round_index in range(rounds):
        shift = round_index % len(keys)
        medians = {}
        for key in keys[shift:] + keys[:shift]:
            times = time_calls(sides[key], calls)
            samples[key] += times
            medians[key] = statistics.median(times)
        for key in paired:
            paired[key].append(medians[key] / medians["bare"])
    return samples, paired


def summarize(
    args: argparse.Namespace,
    samples: dict[str, list[float]],
    paired: dict[str, list[float]],
    loads: tuple[tuple[float, ...], tuple[float, ...]],
) -> dict[str, Any]:
    import onnxruntime as ort

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    bare = statistics.median(samples["bare"])
    return {
        "model": str(args.onnx or "simple_cnn_bn (built, 3x32x32, 10 classes)"),
        "batch": args.batch,
        "threads": args.threads,
        "rounds": args.rounds,
        "calls_per_round": args.calls,
        **{f"{key}_median_us": statistics.median(v) for key, v in samples.items()},
        **{f"{key}_p90_us": pct(v, 90) for key, v in samples.items()},
        **{f"{key}_ratio_of_medians": statistics.median(samples[key]) / bare for key in paired},
        **{f"{key}_paired_ratio_median": statistics.median(v) for key, v in paired.items()},
        "loadavg_before": loads[0],
        "loadavg_after": loads[1],
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
        },
    }


def report_lines(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = [
        f"{label:27s} median {result[key + '_median_us']:.1f} us "
        f"(p90 {result[key + '_p90_us']:.1f})"
        for key, label in (
            ("bare", "bare InferenceSession.run:"),
            ("run", "edgeport Model.run:"),
            ("infer", "edgeport Model.infer:"),
        )
    ]
    lines += [
        f"ratio Model.{key} / bare: {result[f'{key}_ratio_of_medians']:.3f} (medians), "
        f"{result[f'{key}_paired_ratio_median']:.3f} (median of per-round ratios); bar: <= 1.05"
        for key in ("run", "infer")
    ]
    before, after = result["loadavg_before"][0], result["loadavg_after"][0]
    lines.append(
        f"batch {args.batch}, {args.threads} thread(s), {args.rounds} rounds x {args.calls} calls "
        f"each side; load average {before:.2f} before, {after:.2f} after"
    )
    return lines


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

    from edgeport.runtime import load
    from edgeport.runtime.io import atomic_write_json

    with tempfile.TemporaryDirectory() as tmp:
        path = args.onnx or build_small_cnn(Path(tmp) / "simple_cnn_bn.onnx")
        session = bare_session(path, args.threads)
        with load(path, backend="onnxruntime-cpu", threads=args.threads) as model:
            (model_input,) = session.get_inputs()
            name, output = model_input.name, model.output_name
            shape = [args.batch, *model_input.shape[1:]]
            batch = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
            sides: dict[str, Callable[[], Any]] = {
                "bare": lambda: session.run(None, {name: batch})[0],
                "run": lambda: model.run(batch),
                "infer": lambda: model.infer({name: batch})[output],
            }
            outputs = [fn() for fn in sides.values()]
            if not all(np.array_equal(outputs[0], out) for out in outputs[1:]):
                print("error: Model.run/infer and the bare session disagree", file=sys.stderr)
                return 1
            load_before = os.getloadavg()
            samples, paired = interleaved(sides, args.rounds, args.calls, args.warmup)
            loads = (load_before, os.getloadavg())
    result = summarize(args, samples, paired, loads)
    print("\n".join(report_lines(result, args)))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
