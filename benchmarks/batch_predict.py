"""Batch inference throughput on Ray Data: one model actor against two, in one run.

ResNet-18 (torchvision's, seeded random weights, 10 classes) at 3x224x224 fp32 is exported to
ONNX with its model card (``edgeport.export.export_module``), a folder of PNG images is
written, and ``edgeport.runtime.batch.predict_batch`` classifies the folder on a local Ray
cluster with the machine's CPUs: 1 worker x 1 thread, 2 workers x 1 thread, and, for
reference, 1 worker x 2 threads. Times are end to end (actor start, model loads, decoding,
inference, the Parquet write), after one small warm-up run. As a control, the same files go
through ``Model.predict`` in 1 and 2 plain processes (no Ray, one thread each): their ratio is
what the machine allows at the moment (a busy machine gives less than 2x to anyone). Prints the
table and the ratio the goal names (2 workers >= 1.6x one worker on 2 cores); writes JSON and
the table as Markdown to ``benchmarks/results/<machine>/batch/batch_predict.{json,md}``.

    python benchmarks/batch_predict.py                 # 512 images, batch 16
    python benchmarks/batch_predict.py --images 64     # a quick validation run
"""

from __future__ import annotations

import argparse
import datetime
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_lib import repo_relative, resnet18_classifier_onnx

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.6  # 2 workers / 1 worker, rows per second, on 2 cores
log = logging.getLogger("edgeport.benchmarks")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="PNG files to classify (512)")
    parser.add_argument("--batch", type=int, default=16, help="images per model call (16)")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "batch-bench")
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / machine_slug() / "batch"
    )
    return parser.parse_args(argv)


def resnet18_onnx(work: Path) -> Path:
    """torchvision resnet18 (random weights, seeded) as fp32 ONNX with its card embedded."""
    path = work / "resnet18.onnx"
    if path.is_file():
        return path
    names = [f"class{i}" for i in range(10)]
    return resnet18_classifier_onnx(path, opt_batch=16, class_names=names)


def image_folder(work: Path, count: int) -> Path:
    """``count`` random 256x256 RGB PNGs (resized to 224 by the card, as real photos are)."""
    from PIL import Image

    folder = work / f"images-{count}"
    if len(list(folder.glob("*.png"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index:05d}.png")
    return folder


def run(model: Path, folder: Path, out: Path, workers: int, threads: int, batch: int) -> Any:
    from edgeport.runtime.batch import BatchConfig, predict_batch

    config = BatchConfig(
        model=model, inputs=(folder,), out=out, workers=workers, threads=threads, batch=batch
    )
    result = predict_batch(config)
    log.info("%d worker(s) x %d thread(s): %.1f rows/s", workers, threads, result.rows_per_second)
    return result


def classify_files(job: tuple[str, list[str], int]) -> int:
    """In a plain process: load the model (one thread) and classify ``files`` in batches."""
    from edgeport.runtime import load

    model_path, files, batch = job
    with load(model_path, threads=1) as model:
        for start in range(0, len(files), batch):
            model.predict(files[start : start + batch])
    return len(files)


def plain_processes(model: Path, folder: Path, processes: int, batch: int) -> float:
    """Images per second through ``processes`` plain processes (start-up included)."""
    files = [str(p) for p in sorted(folder.glob("*.png"))]
    jobs = [(str(model), files[i::processes], batch) for i in range(processes)]
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context) as pool:
        done = sum(pool.map(classify_files, jobs))
    rate = done / (time.perf_counter() - started)
    log.info("%d plain process(es): %.1f images/s", processes, rate)
    return rate


def main(argv: Sequence[str] | None = None) -> int:
    import ray

    from edgeport.runtime.envinfo import cpu_counts, cpu_model
    from edgeport.runtime.io import atomic_write_json, atomic_write_text

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    model = resnet18_onnx(args.work)
    folder = image_folder(args.work, args.images)
    cpus = cpu_counts()["usable"] or 2
    load_before = os.getloadavg()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    try:
        run(model, image_folder(args.work, 16), args.work / "warmup.parquet", 1, 1, args.batch)
        results, plain = {}, {}
        for w, t in ((1, 1), (2, 1), (1, cpus)):  # interleaved with the control, against drift
            if t == 1:
                plain[w] = plain_processes(model, folder, w, args.batch)
            out = args.work / f"pred-{w}w{t}t.parquet"
            results[w, t] = run(model, folder, out, w, t, args.batch)
    finally:
        ray.shutdown()
    ratio = results[2, 1].rows_per_second / results[1, 1].rows_per_second
    machine = plain[2] / plain[1]
    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/batch_predict.py", *sys.argv[1:]]),
        "cpu": {"model": cpu_model(), **cpu_counts()},
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
        "model": "torchvision resnet18, random weights, 10 classes, 3x224x224, ONNX fp32",
        "images": args.images,
        "runs": [r.to_dict() | {"out": repo_relative(r.out)} for r in results.values()],
        "plain_processes_images_per_second": {str(k): round(v, 3) for k, v in plain.items()},
        "ratio_2_workers_vs_1": round(ratio, 3),
        "ratio_2_plain_processes_vs_1": round(machine, 3),
        "target": TARGET,
        "met": ratio >= TARGET,
    }
    atomic_write_json(args.out / "batch_predict.json", report)
    atomic_write_text(args.out / "batch_predict.md", markdown(report))
    print("\n" + markdown(report))
    print(f"written to {args.out / 'batch_predict.json'} and batch_predict.md")
    return 0


def markdown(report: dict[str, Any]) -> str:
    """The report's table and ratios as Markdown (what is printed and saved beside the JSON)."""
    plain = report["plain_processes_images_per_second"]
    lines = [
        "# Batch prediction on Ray Data: one worker against two",
        "",
        f"{report['images']} images, {report['model']}; {report['cpu']['model']}, "
        f"{report['cpu']['usable']} usable CPUs; `{report['command']}`, {report['created']}; "
        f"load average before: {', '.join(f'{v:.2f}' for v in report['load_average_before'])}.",
        "",
        "| workers x threads | batch | seconds | images/s | plain processes (no Ray), images/s |",
        "|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        w, t = run["workers"], run["threads"]
        control = f"{plain[str(w)]:.1f}" if t == 1 else "-"
        lines.append(
            f"| {w} x {t} | {run['batch']} | {run['seconds']:.1f} | "
            f"{run['rows_per_second']:.1f} | {control} |"
        )
    verdict = "met" if report["met"] else "not met"
    lines += [
        "",
        f"2 workers / 1 worker: {report['ratio_2_workers_vs_1']:.2f}x (target >= "
        f"{report['target']}x: {verdict}); 2 plain processes / 1 (what the machine allowed): "
        f"{report['ratio_2_plain_processes_vs_1']:.2f}x.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
