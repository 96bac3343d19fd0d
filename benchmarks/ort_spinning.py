"""ONNX Runtime's spinning worker threads against sleeping ones, in fresh processes.

Each process opens the given ONNX files (fp32 and, optionally, an int8 file of the same model)
with 2 intra-op threads, ``session.intra_op.allow_spinning`` 1 (ONNX Runtime's default) or 0,
and prints each file's median latency on a random input of the model's shape; spinning and
sleeping processes alternate. On a virtual machine whose two vCPUs sometimes share one host
core, the spinning processes split into a fast and a slow group while the sleeping ones stay
together, and the int8/fp32 ratio of a slow spinning process is not the quiet one.

    python benchmarks/ort_spinning.py MODEL.fp32.onnx [MODEL.int8.onnx] [--shape 1x3x48x192]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np

WARMUP, RUNS = 50, 300


def median_ms(path: str, spinning: bool, shape: Sequence[int] | None) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal(
            shape or [d if isinstance(d, int) else 1 for d in i.shape]
        ).astype(np.float32)
        for i in session.get_inputs()
    }
    for _ in range(WARMUP):
        session.run(None, feeds)
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="an fp32 ONNX file, then optionally an int8 one")
    parser.add_argument("--processes", type=int, default=8, help="per setting")
    parser.add_argument(
        "--shape", help="the input's shape, e.g. 1x3x48x192 (default: its fixed dims, 1 for others)"
    )
    parser.add_argument("--one", choices=("1", "0"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        shape = [int(d) for d in args.shape.split("x")] if args.shape else None
        print(" ".join(f"{median_ms(f, args.one == '1', shape):.3f}" for f in args.files))
        return 0
    found: dict[str, list[list[float]]] = {"spinning": [], "sleeping": []}
    for _ in range(args.processes):
        for flag, label in (("1", "spinning"), ("0", "sleeping")):
            out = subprocess.run(
                [sys.executable, __file__, *args.files, "--one", flag]
                + (["--shape", args.shape] if args.shape else []),
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split()
            found[label].append([float(v) for v in out])
            ratio = (
                f"  int8/fp32 {found[label][-1][1] / found[label][-1][0]:.2f}"
                if len(out) > 1
                else ""
            )
            print(f"{label}: " + " ".join(f"{v} ms" for v in out) + ratio, flush=True)
    for label, rows in found.items():
        fp32 = [r[0] for r in rows]
        print(f"{label}: fp32 {min(fp32):.3f}-{max(fp32):.3f} ms over {len(rows)} processes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
