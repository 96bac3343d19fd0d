"""Classify every image in a folder on Ray Data and read the predictions back from Parquet.

    python examples/batch_predict_folder.py bundles/digits photos/ predictions.parquet
    python examples/batch_predict_folder.py bundles/digits photos/ out.parquet --workers 2

The same as ``edgeport predict MODEL FOLDER --out FILE.parquet`` (needs
``edgeport-runtime[batch]``). A local Ray is started first with the CPUs this machine has, so
the run never joins another Ray cluster by accident; on a cluster, ``ray.init(address=...)``
instead, with the images at the same path on every node.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pyarrow.parquet as pq
import ray

from edgeport.runtime.batch import BatchConfig, predict_batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a bundle directory, .onnx or engine file")
    parser.add_argument("folder", type=Path, help="images, searched recursively")
    parser.add_argument("out", type=Path, help="the .parquet file to write")
    parser.add_argument("--workers", type=int, default=1, help="model actors (1)")
    args = parser.parse_args(argv)

    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    try:
        config = BatchConfig(args.model, (args.folder,), args.out, workers=args.workers, top_k=3)
        result = predict_batch(config)  # uses the Ray this process started
    finally:
        ray.shutdown()
    print(f"{result.rows} rows ({result.errors} errors) in {result.seconds:.1f} s")

    table = pq.read_table(args.out)  # one row per image, in input order
    for row in table.to_pylist():
        name = Path(row["path"]).name
        if row["error"]:  # an image that did not decode: the run went on without it
            print(f"{name}: {row['error']}")
            continue
        pairs = zip(row["labels"], row["scores"], strict=True)
        print(f"{name}: " + ", ".join(f"{label} {score:.2f}" for label, score in pairs))


if __name__ == "__main__":
    main()
