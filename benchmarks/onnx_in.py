"""ONNX in (``make bench``): models no one here wrote, exported from their ONNX files to fp16 and
int8 per engine, with parity and speed.

- PP-OCRv4's text detector and PP-OCR's text-orientation classifier (from the rapidocr wheel),
  calibrated and checked on rendered text (Pillow draws words in its own font: pages of lines
  for the detector, single lines upright or turned 180 degrees for the classifier, so its
  accuracy means something);
- Magika's file-type classifier (from the magika wheel), on the bytes of real files of this
  repository and its environment, featurized as Magika does (the first, middle and last 512
  bytes, whitespace stripped at the ends, padded with 256).

Each goes through ``edgeport export MODEL.onnx --precision fp16,int8`` (``export_onnx``):
every artifact is judged against the source file on ONNX Runtime's CPU provider; then fp32,
fp16 and each engine's int8 file are timed side by side on ONNX Runtime and OpenVINO (batch 1,
interleaved rounds, median).

    python benchmarks/onnx_in.py [--models ppocr_cls,magika] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("edgeport.benchmarks")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "thirdparty"))

from models import model_path  # noqa: E402 - tests/thirdparty/models.py, fetched by make models

CACHE = REPO / ".cache" / "onnx-in-bench"
WORDS = (
    *("edge", "port", "bundle", "parity", "int8", "engine", "latency", "model", "export"),
    *("quantize", "device", "runtime", "tensor", "layer", "kernel", "batch", "detector"),
    *("receipt", "invoice", "total", "amount", "date", "street", "city", "order", "number"),
    *("2024", "12.50", "EUR", "USD", "ACME", "Corp.", "shipping", "address", "phone"),
)
DET_SIZE = (320, 640)  # height, width: multiples of 32, as the detector needs
CLS_SIZE = (48, 192)
ROUNDS = 7


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _line(rng: np.random.Generator, words: int) -> str:
    return " ".join(str(rng.choice(WORDS)) for _ in range(words))


def text_pages(count: int, seed: int) -> np.ndarray:
    """Pages of dark text lines on light paper, normalised as PP-OCR's detector takes them."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = DET_SIZE
    pages = []
    for _ in range(count):
        paper = int(rng.integers(200, 256))
        image = Image.new("RGB", (width, height), (paper, paper, paper - 10))
        draw = ImageDraw.Draw(image)
        y = int(rng.integers(5, 30))
        while y < height - 30:
            size = int(rng.integers(14, 30))
            ink = tuple(int(v) for v in rng.integers(0, 80, 3))
            x = int(rng.integers(5, 120))
            draw.text((x, y), _line(rng, int(rng.integers(2, 7))), fill=ink, font=_font(size))
            y += size + int(rng.integers(8, 30))
        pages.append(np.asarray(image, dtype=np.float32) / 255.0)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((np.stack(pages) - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def text_lines(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Single text lines as PP-OCR's orientation classifier takes them (48x192, (x - 0.5) /
    0.5), every other one turned 180 degrees; and the labels (0 upright, 1 turned)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = CLS_SIZE
    lines, labels = [], []
    for index in range(count):
        size = int(rng.integers(20, 34))
        text = _line(rng, int(rng.integers(1, 4)))
        font = _font(size)
        box = font.getbbox(text)
        image = Image.new("RGB", (box[2] + 8, size + 12), (235, 235, 230))
        ImageDraw.Draw(image).text((4, 2), text, fill=(20, 20, 30), font=font)
        turned = index % 2
        if turned:
            image = image.rotate(180)
        scale = height / image.height
        resized = image.resize((min(width, max(1, int(image.width * scale))), height))
        canvas = np.zeros((height, width, 3), np.float32)  # padded right, as PP-OCR pads
        canvas[:, : resized.width] = (np.asarray(resized, np.float32) / 255.0 - 0.5) / 0.5
        lines.append(canvas.transpose(2, 0, 1))
        labels.append(turned)
    return np.stack(lines), np.asarray(labels)


def file_features(paths: Sequence[Path], size: int = 512, padding: int = 256) -> np.ndarray:
    """Magika's input for each file: the first ``size`` bytes after leading whitespace, the
    middle ``size`` and the last ``size`` before trailing whitespace, padded with 256."""
    rows = []
    for path in paths:
        data = path.read_bytes()
        begin, end = data.lstrip()[:size], data.rstrip()[-size:]
        middle_start = max(0, (len(data) - size) // 2)
        middle = data[middle_start : middle_start + size]
        row = np.full(3 * size, padding, np.float32)
        row[: len(begin)] = np.frombuffer(begin, np.uint8)
        row[size : size + len(middle)] = np.frombuffer(middle, np.uint8)
        row[3 * size - len(end) :] = np.frombuffer(end, np.uint8)
        rows.append(row)
    return np.stack(rows)


def real_files(count: int, seed: int) -> list[Path]:
    """Files of many kinds from this repository and the environment it runs in."""
    roots = [
        REPO / "runtime",
        REPO / "export",
        REPO / "train",
        REPO / "benchmarks",
        Path(np.__file__).parent,
    ]
    found = [
        p
        for root in roots
        for p in root.rglob("*")
        if p.is_file() and p.stat().st_size > 64 and "__pycache__" not in p.parts
    ]
    found.sort()
    rng = np.random.default_rng(seed)
    return [found[i] for i in rng.choice(len(found), size=min(count, len(found)), replace=False)]


def data(name: str) -> dict[str, Any]:
    """Calibration and parity inputs (and labels where the task has them) for ``name``."""
    if name == "ppocr_det":
        return {"calib": {"x": text_pages(32, 0)}, "parity": {"x": text_pages(16, 1)}}
    if name == "ppocr_cls":
        calib, _ = text_lines(128, 0)
        parity, labels = text_lines(200, 1)
        return {"calib": {"x": calib}, "parity": {"x": parity}, "labels": labels}
    files = real_files(400, 0)
    return {
        "calib": {"bytes": file_features(files[:200])},
        "parity": {"bytes": file_features(files[200:])},
    }


def export(name: str, bundle: Path, inputs: dict[str, Any]) -> Any:
    from edgeport.export import export_onnx

    return export_onnx(
        model_path(name),
        bundle,
        precisions=("fp32", "fp16", "int8"),
        calibration=inputs["calib"],
        parity_inputs=inputs["parity"],
        keep_slow_int8=True,
    )


def measure(name: str, out: Path, threads: int, duration: float) -> dict[str, Any]:
    """Export ``name`` and time its artifacts on both CPU engines; the record for the report."""
    import shutil

    from edgeport.runtime import load
    from edgeport.runtime.tools.check import run_batches
    from edgeport.runtime.tools.timing import TimingConfig, time_interleaved

    inputs = data(name)
    bundle = CACHE / name / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    manifest = export(name, bundle, inputs)
    first = {k: np.ascontiguousarray(v[:1]) for k, v in inputs["parity"].items()}
    plan = {
        "onnxruntime-cpu": ("onnx-fp32", "onnx-fp16", "onnx-int8"),
        "openvino": ("onnx-fp32", "onnx-fp16", "onnx-int8-openvino"),
    }
    names = {a.name: a for a in manifest.artifacts}
    opened, steps, outputs = [], {}, {}
    for engine, artifacts in plan.items():
        for artifact in artifacts:
            if artifact not in names:
                continue
            options = {"cache_dir": ""} if engine == "openvino" else {}
            model = load(
                bundle / names[artifact].path,
                engine,
                threads=threads,
                verify=False,
                backend_options=options,
            )
            opened.append(model)
            label = f"{artifact} on {engine}"
            steps[label] = lambda m=model: m.infer(first)
            outputs[label] = run_batches(model, [inputs["parity"]], rechunk=True)
    try:
        samples = time_interleaved(steps, TimingConfig(warmup_s=1.0, duration_s=duration), ROUNDS)
    finally:
        for model in opened:
            model.close()
    p50 = {label: float(np.median(ms)) for label, ms in samples.items()}
    result = {
        "model": name,
        "source": model_path(name).name,
        "inputs": {k: list(v.shape) for k, v in inputs["parity"].items()},
        "calibration_samples": int(next(iter(inputs["calib"].values())).shape[0]),
        "artifacts": {
            a.name: {
                "size_mb": round(a.size_bytes / 1e6, 2),
                "parity": (a.parity or {}).get("status"),
                "failures": (a.parity or {}).get("failures"),
                "decision": (a.quantization or {}).get("decision"),
                "float_convs": (a.quantization or {}).get("float_convs"),
                "float_layers": len((a.quantization or {}).get("float_layers") or []),
                "cosine_min": [
                    o["comparison"].get("cosine_min") for o in (a.parity or {}).get("outputs", [])
                ],
            }
            for a in manifest.artifacts
        },
        "left_out": manifest.export.get("int8_left_out", {}),
        "latency_ms": p50,
        "threads": threads,
    }
    result["agreement"] = _agreement(outputs, inputs.get("labels"))
    return result


def _agreement(
    outputs: dict[str, dict[str, np.ndarray]], labels: np.ndarray | None
) -> dict[str, Any]:
    """Per engine and artifact: top-1 agreement with fp32 on that engine (classifiers), and
    accuracy against the labels where there are some."""
    out: dict[str, Any] = {}
    for label, values in outputs.items():
        engine = label.split(" on ")[1]
        reference = outputs[f"onnx-fp32 on {engine}"]
        value, ref = next(iter(values.values())), next(iter(reference.values()))
        if value.ndim != 2:  # a probability map: cosine in the artifacts' parity instead
            continue
        entry = {"agreement": float((value.argmax(1) == ref.argmax(1)).mean())}
        if labels is not None:
            entry["accuracy"] = float((value.argmax(1) == labels).mean())
        out[label] = entry
    return out


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# ONNX in: models from elsewhere, exported to fp16 and int8 per engine",
        "",
        f"Batch 1, {results[0]['threads']} threads, median of {ROUNDS} interleaved rounds. Parity: "
        "every artifact against the source file on ONNX Runtime's CPU provider (int8: cosine "
        ">= 0.98 per output; fp16: the fp16 tensor rule).",
        "",
        "| model | inputs | artifact | size MB | parity | min cosine | decision "
        "| ONNX Runtime ms | OpenVINO ms | top-1 agreement / accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for artifact, info in r["artifacts"].items():
            ort = _cell(r["latency_ms"].get(f"{artifact} on onnxruntime-cpu"))
            ov = _cell(r["latency_ms"].get(f"{artifact} on openvino"))
            agree = [
                f"{v['agreement']:.1%}" + (f" / {v['accuracy']:.1%}" if "accuracy" in v else "")
                for k, v in r["agreement"].items()
                if k.startswith(f"{artifact} on ")
            ]
            cosine = ", ".join(f"{c:.4f}" for c in info["cosine_min"] if c is not None)
            lines.append(
                f"| {r['model']} | {r['inputs']} | {artifact} | {info['size_mb']} "
                f"| {info['parity']} | {cosine} | {info['decision'] or '-'} | {ort} | {ov} "
                f"| {', '.join(agree) or '-'} |"
            )
        for target, record in r["left_out"].items():
            why = record.get("reason")
            lines.append(f"| {r['model']} | | int8 for {target} | | | | left out: {why} | | | |")
    lines.append("")
    return "\n".join(lines)


def _cell(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    from edgeport.runtime.envinfo import machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="ppocr_det,ppocr_cls,magika")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / machine_slug() / "onnx_in"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "nncf", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ["EDGEPORT_CACHE_DIR"] = str(CACHE / "runtime-cache")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    missing = [n for n in names if not model_path(n).is_file()]
    if missing:
        print(f"error: {missing} not fetched; run `make models` first")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results = [measure(name, args.out, args.threads, args.duration_s) for name in names]
    (args.out / "onnx_in.json").write_text(json.dumps(results, indent=1))
    (args.out / "README.md").write_text(markdown(results))
    print((args.out / "README.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
