"""The int8 benchmark (``make bench``): edgeport's int8 per engine against fp32 and the field's
own quantizers, on six torchvision networks trained on the digits first.

mobilenet_v3_small, mobilenet_v3_large, mobilenet_v2, efficientnet_b0, resnet18 and
regnet_y_400mf are trained on the embedded digits to >= 90% held-out accuracy
(``quantization_train.py``; weights cached), then, one process per model, at 224x224:

1. **prepare** (cached in ``.cache/quantization-bench/<model>``): edgeport's export of the
   trained network (fp32, one int8 file per engine family, TensorRT-RTX engines where
   ``tensorrt_rtx`` is installed; ``keep_slow_int8`` so that every file can be timed, its
   decision recorded), and the peers made from the same fp32 file and calibration images:
   ONNX Runtime's quantizer with its defaults (after ``quant_pre_process``, its documented
   first step) and NNCF's ``nncf.quantize`` with its defaults;
2. **measure**: ``edgeport tune`` on the bundle, then per batch size (1 and 8) every file on
   each engine that runs it (ONNX Runtime CPU, OpenVINO) and ``auto`` loaded at once and timed
   in interleaved rounds (median); per file and engine the convolutions left in float, and the
   top-1 agreement with fp32 on the same engine and the accuracy on the 359 held-out digits.

Goals: on OpenVINO, edgeport's int8 at most 1.03x NNCF's latency and at least 1.1x faster than
fp32 on all six; on ONNX Runtime, at most the best peer file's latency (x1.03) on all six and at
least 1.3x faster than fp32 on resnet18, mobilenet_v2 and regnet_y_400mf; top-1 agreement
>= 99% and accuracy drop <= 1 point for every int8 artifact the rule keeps (not those kept
only for timing); ``auto`` at most 1.03x the best file on any engine among those agreeing with
fp32 on >= 99% of the digits. A peer's file that is the same model as edgeport's (NNCF's, on
OpenVINO) is timed once. TensorRT int8 cannot be timed without an NVIDIA GPU: its
file is built into an engine by TensorRT-RTX (when installed) and judged on ONNX Runtime's
CPU provider, which the results say.

    python benchmarks/quantization.py                       # prepare what is missing, measure
    python benchmarks/quantization.py --prepare-only        # train, export, make the peers
    python benchmarks/quantization.py --models resnet18 --duration-s 1 --out runs/quantization-quick
    python benchmarks/quantization.py --no-train   # random weights where none are trained yet
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quantization_train import (
    CACHE,
    CLASSES,
    RECIPES,
    digits,
    load_trained,
    train,
    untrained,
    weights_path,
)

log = logging.getLogger("edgeport.benchmarks")

REPO = Path(__file__).resolve().parents[1]
MODELS = tuple(RECIPES)
ENGINES = ("onnxruntime-cpu", "openvino")
CALIBRATION = 256  # training images every quantizer calibrates on
ROUNDS = 7
OURS = {"onnxruntime-cpu": "onnx-int8", "openvino": "onnx-int8-openvino"}
PEERS = ("ort-default", "nncf")
ORT_SPEEDUP_MODELS = ("resnet18", "mobilenet_v2", "regnet_y_400mf")
GOALS = {"ratio": 1.03, "ov_speedup": 1.1, "ort_speedup": 1.3, "agreement": 0.99, "drop": 0.01}


def model_dir(cache: Path, name: str) -> Path:
    return cache / name


# --------------------------------------------------------------------------------------------
# Prepare: train, export, peers (cached)


def prepare(name: str, cache: Path, *, train_missing: bool = True) -> Path:
    """The bundle and the peer files of ``name`` (made when missing or older than its weights);
    returns the folder. Without ``train_missing``, a network with no trained weights cached is
    measured with random ones (:func:`quantization_train.untrained`): agreement, no accuracy."""
    folder = model_dir(cache, name)
    record = train(name, cache) if train_missing else untrained(name, cache)
    if not record.get("trained", True):
        log.warning("%s has no trained weights: measured with random ones", name)
    elif record["test_accuracy"] < 0.9:
        log.warning(
            "%s reached only %.1f%% on the held-out digits", name, 100 * record["test_accuracy"]
        )
    manifest = folder / "bundle" / "manifest.json"
    made = manifest.stat().st_mtime if manifest.is_file() else 0.0
    if made < weights_path(name, cache).stat().st_mtime:
        _export(name, folder)
    calib = {"images": digits("train")[0][:CALIBRATION]}
    fp32 = folder / "bundle" / "model.fp32.onnx"
    for peer, make in (("ort-default", _ort_default), ("nncf", _nncf_default)):
        path = folder / f"{peer}.onnx"
        if not path.is_file() or path.stat().st_mtime < fp32.stat().st_mtime:
            make(fp32, path, calib)
    return folder


def _export(name: str, folder: Path) -> None:
    from edgeport.export import ImagePreprocessing, export_module
    from edgeport.runtime.backends.tensorrt import installed_flavours
    from edgeport.train.data import IMAGENET_MEAN, IMAGENET_STD

    train_images, test = digits("train")[0][:CALIBRATION], digits("test")[0]
    started = time.perf_counter()
    export_module(
        load_trained(name, folder.parent),
        (test[:2],),
        folder / "bundle",
        precisions=("fp32", "int8"),
        calibration={"images": train_images},
        parity_inputs={"images": test},
        task="classification",
        class_names=CLASSES,
        architecture=f"torchvision:{name}",
        image=ImagePreprocessing((224, 224), 3, IMAGENET_MEAN, IMAGENET_STD, input="images"),
        input_names=("images",),
        output_names=("logits",),
        tensorrt="tensorrt_rtx" in installed_flavours(),
        tensorrt_flavour="tensorrt_rtx" if "tensorrt_rtx" in installed_flavours() else None,
        keep_slow_int8=True,
    )
    (folder / "export_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")


def _ort_default(fp32: Path, dst: Path, calib: dict[str, np.ndarray]) -> None:
    """ONNX Runtime's quantizer as its documentation runs it: ``quant_pre_process``, then
    ``quantize_static`` with every option at its default."""
    from onnxruntime.quantization import quant_pre_process, quantize_static

    from edgeport.export.quantize import CalibrationReader

    pre = dst.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(dst), CalibrationReader([calib]))
    pre.unlink()


def _nncf_default(fp32: Path, dst: Path, calib: dict[str, np.ndarray]) -> None:
    """NNCF's post-training quantization of the ONNX model, every option at its default."""
    import nncf
    import onnx

    samples = [{"images": calib["images"][i : i + 1]} for i in range(len(calib["images"]))]
    quantized = nncf.quantize(onnx.load(str(fp32)), nncf.Dataset(samples), subset_size=len(samples))
    onnx.save(quantized, str(dst))


# --------------------------------------------------------------------------------------------
# Measure one model (its own process)


def _files(folder: Path) -> dict[str, Path]:
    from edgeport.runtime.bundle import Manifest

    manifest = Manifest.load(folder / "bundle")
    files = {a.name: folder / "bundle" / a.path for a in manifest.artifacts if a.format == "onnx"}
    files.update({peer: folder / f"{peer}.onnx" for peer in PEERS})
    return files


def _open(
    files: dict[str, Path], threads: int
) -> tuple[dict[tuple[str, str], Any], dict[str, str], dict[str, str]]:
    """Every file on every engine it opens and runs on (the TensorRT file is judged on ONNX
    Runtime at export, not timed here); why the others could not; and the files that are the
    same model as one opened before them (``"nncf on openvino"`` -> ``"onnx-int8-openvino on
    openvino"``), opened once: timing one model twice measures only the machine's noise."""
    from edgeport.runtime import load
    from edgeport.runtime.errors import EdgeportError

    probe = digits("test")[0][:1]
    opened, failed, same = {}, {}, {}
    prints = {label: _fingerprint(path) for label, path in files.items()}
    for engine in ENGINES:
        for label, path in files.items():
            if label == "onnx-int8-tensorrt" or label == OURS[_other(engine)]:
                continue
            twin = next((o for e, o in opened if e == engine and prints[o] == prints[label]), None)
            if twin is not None:
                same[f"{label} on {engine}"] = f"{twin} on {engine}"
                continue
            options = {"cache_dir": ""} if engine == "openvino" else {}
            try:
                model = load(path, engine, threads=threads, verify=False, backend_options=options)
                model.infer({"images": probe})
            except EdgeportError as exc:
                failed[f"{label} on {engine}"] = str(exc).splitlines()[0][:300]
                continue
            opened[(engine, label)] = model
    return opened, failed, same


def _fingerprint(path: Path) -> str:
    """A hash of what an engine runs: the graph's nodes and initializers (not its names,
    producer or metadata)."""
    import hashlib

    import onnx

    graph = onnx.load(str(path)).graph
    digest = hashlib.sha256()
    for part in (*graph.node, *graph.initializer, *graph.input, *graph.output):
        digest.update(part.SerializeToString(deterministic=True))
    return digest.hexdigest()


def _with_twins(measured: dict[str, Any], same: dict[str, str]) -> dict[str, Any]:
    """``measured`` (by ``"<file> on <engine>"``) with each twin given its original's entry."""
    return measured | {twin: measured[of] for twin, of in same.items() if of in measured}


def _other(engine: str) -> str:
    return next(e for e in ENGINES if e != engine)


def _float_convs(files: dict[str, Path], opened: dict[tuple[str, str], Any]) -> dict[str, Any]:
    from edgeport.export.int8.float_convs import float_convs_onnxruntime, float_convs_openvino

    counts: dict[str, Any] = {}
    for engine, label in opened:
        count = float_convs_onnxruntime if engine == "onnxruntime-cpu" else float_convs_openvino
        counts[f"{label} on {engine}"] = count(files[label]).to_dict()
    return counts


def _accuracy(opened: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """Top-1 agreement with fp32 on the same engine, and accuracy, on the held-out digits."""
    images, labels = digits("test")
    top1 = {}
    for key, model in opened.items():
        logits = np.concatenate(
            [
                model.infer({"images": images[i : i + 32]})["logits"]
                for i in range(0, len(images), 32)
            ]
        )
        top1[key] = logits.argmax(1)
    out = {}
    for (engine, label), classes in top1.items():
        fp32 = top1[(engine, "onnx-fp32")]
        out[f"{label} on {engine}"] = {
            "agreement": float((classes == fp32).mean()),
            "accuracy": float((classes == labels).mean()),
            "accuracy_drop": float((fp32 == labels).mean() - (classes == labels).mean()),
            "samples": len(labels),
        }
    return out


def _tune(bundle: Path, batches: Sequence[int], threads: int, duration: float) -> dict[str, Any]:
    from edgeport.runtime.tools.timing import TimingConfig
    from edgeport.runtime.tools.tune import TuneSettings, tune
    from edgeport.runtime.tuning_records import save_record

    settings = TuneSettings(
        batches=tuple(batches),
        threads=threads,
        timing=TimingConfig(warmup_s=0.5, duration_s=duration),
    )
    record, _ = tune(bundle, settings)
    save_record(record, bundle)
    return record.to_dict()


def _time(
    opened: dict[tuple[str, str], Any], bundle: Path, batch: int, threads: int, duration: float
) -> dict[str, float]:
    """Median latency (ms) of every opened file and of auto, interleaved."""
    from edgeport.runtime import load
    from edgeport.runtime.tools.timing import TimingConfig, time_interleaved

    feeds = {"images": np.ascontiguousarray(digits("test")[0][:batch])}
    auto = load(bundle, threads=threads, expected_batch=batch)
    steps: dict[str, Any] = {
        f"{label} on {engine}": (lambda m=model: m.infer(feeds))
        for (engine, label), model in opened.items()
    }
    steps[f"auto ({auto.backend} {auto.precision})"] = lambda: auto.infer(feeds)
    try:
        samples = time_interleaved(steps, TimingConfig(warmup_s=1.0, duration_s=duration), ROUNDS)
    finally:
        auto.close()
    return {label: float(np.median(ms)) for label, ms in samples.items()}


def measure(
    name: str, cache: Path, batches: Sequence[int], threads: int, duration: float
) -> dict[str, Any]:
    """Everything the benchmark reports about one model."""
    from edgeport.runtime.bundle import Manifest
    from edgeport.runtime.envinfo import collect_environment

    folder = model_dir(cache, name)
    bundle = folder / "bundle"
    files = _files(folder)
    manifest = Manifest.load(bundle)
    tuned = _tune(bundle, batches, threads, duration / 2)
    opened, failed, same = _open(files, threads)
    try:
        result = {
            "model": name,
            "training": json.loads((folder / "training.json").read_text()),
            "decisions": {
                a.name: {
                    k: a.quantization[k]
                    for k in ("target", "decision", "reason", "float_layers", "speedup")
                }
                for a in manifest.artifacts
                if a.quantization
            },
            "left_out": manifest.export.get("int8_left_out", {}),
            "engines": [a.name for a in manifest.artifacts if a.format == "tensorrt"],
            "could_not_run": failed,
            "same_file": same,
            "float_convs": _with_twins(_float_convs(files, opened), same),
            "accuracy": _with_twins(_accuracy(opened), same),
            "tune": tuned,
            "latency_ms": {
                str(b): _with_twins(_time(opened, bundle, b, threads, duration), same)
                for b in batches
            },
            "threads": threads,
            "rounds": ROUNDS,
            "duration_s": duration,
            "environment": collect_environment(threads=threads),
        }
    finally:
        for model in opened.values():
            model.close()
    result["goals"] = goals(result)
    return result


# --------------------------------------------------------------------------------------------
# Goals and tables


def _ms(result: dict[str, Any], batch: str, label: str, engine: str) -> float | None:
    return result["latency_ms"][batch].get(f"{label} on {engine}")


def goals(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal of the module doc this model's numbers decide, met or not."""
    name, out = result["model"], []
    for batch, p50 in result["latency_ms"].items():
        ov = {k: _ms(result, batch, k, "openvino") for k in ("onnx-fp32", OURS["openvino"], "nncf")}
        ort = {
            k: _ms(result, batch, k, "onnxruntime-cpu")
            for k in ("onnx-fp32", OURS["onnxruntime-cpu"], *PEERS)
        }
        ours_ov, ours_ort = ov[OURS["openvino"]], ort[OURS["onnxruntime-cpu"]]
        if ours_ov and ov["nncf"]:
            twin = (
                result.get("same_file", {}).get("nncf on openvino")
                == f"{OURS['openvino']} on openvino"
            )
            out.append(
                _goal(
                    name,
                    batch,
                    "openvino: edgeport int8 / NNCF latency"
                    + (" (the same model: NNCF made both)" if twin else ""),
                    ours_ov / ov["nncf"],
                    "<=",
                    GOALS["ratio"],
                )
            )
        if ours_ov and ov["onnx-fp32"]:
            out.append(
                _goal(
                    name,
                    batch,
                    "openvino: fp32 / edgeport int8 latency",
                    ov["onnx-fp32"] / ours_ov,
                    ">=",
                    GOALS["ov_speedup"],
                )
            )
        peers = [ort[p] for p in PEERS if ort[p]]
        if ours_ort and peers:
            out.append(
                _goal(
                    name,
                    batch,
                    "onnxruntime: edgeport int8 / best peer file latency",
                    ours_ort / min(peers),
                    "<=",
                    GOALS["ratio"],
                )
            )
        if ours_ort and ort["onnx-fp32"] and name in ORT_SPEEDUP_MODELS:
            out.append(
                _goal(
                    name,
                    batch,
                    "onnxruntime: fp32 / edgeport int8 latency",
                    ort["onnx-fp32"] / ours_ort,
                    ">=",
                    GOALS["ort_speedup"],
                )
            )
        auto = next((v for k, v in p50.items() if k.startswith("auto")), None)
        best = p50[best_file(result, batch)]
        if auto:
            what = "auto / best agreeing file on any engine"
            out.append(_goal(name, batch, what, auto / best, "<=", GOALS["ratio"]))
    # a file the rule keeps; "kept-slow" ones are in the bundle only because the benchmark
    # asks for them (keep_slow_int8) to time them
    kept = {a for a, d in result["decisions"].items() if d["decision"] in ("kept", "kept-untimed")}
    trained = result["training"].get("trained", True)
    for label, acc in result["accuracy"].items():
        artifact, engine = label.split(" on ")
        if artifact in kept and OURS.get(engine) == artifact:
            out.append(
                _goal(
                    name,
                    "-",
                    f"{label}: top-1 agreement",
                    acc["agreement"],
                    ">=",
                    GOALS["agreement"],
                )
            )
            if trained:  # an accuracy from random weights means nothing
                out.append(
                    _goal(
                        name,
                        "-",
                        f"{label}: accuracy drop",
                        acc["accuracy_drop"],
                        "<=",
                        GOALS["drop"],
                    )
                )
    return out


def best_file(result: dict[str, Any], batch: str) -> str:
    """The fastest file on any engine at ``batch`` among those that agree with fp32 on that
    engine on >= 99% of the held-out digits (a file that changes more answers is no rival)."""
    agree = {label: a["agreement"] for label, a in result["accuracy"].items()}
    p50 = result["latency_ms"][batch]
    rivals = [k for k in p50 if not k.startswith("auto") and agree.get(k, 0) >= GOALS["agreement"]]
    return min(rivals, key=p50.__getitem__)


def _goal(
    model: str, batch: str, what: str, value: float, how: str, target: float
) -> dict[str, Any]:
    met = value <= target if how == "<=" else value >= target
    return {
        "model": model,
        "batch": batch,
        "what": what,
        "value": value,
        "target": f"{how} {target}",
        "met": met,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """The results tables: latency per engine and batch, float convolutions, accuracy, goals."""
    lines = ["# int8 per engine: edgeport against fp32, ONNX Runtime's quantizer and NNCF", ""]
    env = results[0]["environment"]
    lines += [
        f"Machine: {env['cpu']['model']} ({env['cpu'].get('usable')} usable cores), "
        f"{results[0]['threads']} threads; median latency of {results[0]['rounds']} interleaved "
        f"rounds, {results[0]['duration_s']:g} s per file; 224x224 digits, networks trained to "
        "the accuracy shown (`untrained`: random weights with BatchNorm statistics from the "
        "digits, judged by agreement with fp32 only). `ort-default`: ONNX Runtime's "
        "`quantize_static` with its defaults after `quant_pre_process`; `nncf`: `nncf.quantize` "
        "with its defaults; both on the same fp32 file and 256 calibration images as edgeport. "
        "`same file`: a peer's file that is the same model as edgeport's (graph and weights), "
        "timed once.",
        "",
    ]
    for engine in ENGINES:
        ours = OURS[engine]
        lines += [
            f"## {engine}",
            "",
            "| model | acc fp32 | batch | fp32 ms | edgeport int8 | ort-default | nncf "
            "| float convs (edgeport / ort-default / nncf) | agreement edgeport |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            conv = r["float_convs"]
            floats = " / ".join(
                f"{conv[k]['float']}/{conv[k]['total']}"
                if (k := f"{f} on {engine}") in conv
                else "-"
                for f in (ours, *PEERS)
            )
            trained = r["training"].get("trained", True)
            acc = r["accuracy"].get(f"onnx-fp32 on {engine}", {}).get("accuracy")
            agree = r["accuracy"].get(f"{ours} on {engine}", {})
            drop = (
                f" (accuracy drop {100 * agree.get('accuracy_drop', 0):.1f} pt)" if trained else ""
            )
            for batch in r["latency_ms"]:
                fp32 = _ms(r, batch, "onnx-fp32", engine)
                cells = []
                for label in (ours, *PEERS):
                    ms = _ms(r, batch, label, engine)
                    twin = f"{label} on {engine}" in r.get("same_file", {})
                    cells.append(
                        f"{ms:.2f} ({fp32 / ms:.2f}x{', same file' if twin else ''})"
                        if ms and fp32
                        else "fails"
                        if f"{label} on {engine}" in r["could_not_run"]
                        else "-"
                    )
                lines.append(
                    f"| {r['model']} | {f'{acc:.1%}' if trained else 'untrained'} | {batch} "
                    f"| {fp32:.2f} | "
                    + " | ".join(cells)
                    + f" | {floats} | "
                    + (f"{agree['agreement']:.1%}{drop} |" if agree else "- |")
                )
        lines.append("")
    lines += [
        "## Decisions at export (edgeport's keep-only-when-it-wins rule, 1.1x)",
        "",
        "| model | artifact | decision | speed-up at export | layers kept in float | reason |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        left_out = {f"int8 for {target}": d for target, d in r["left_out"].items()}
        for artifact, d in {**r["decisions"], **left_out}.items():
            speed = "-" if d["speedup"] is None else f"{d['speedup']:.2f}x"
            lines.append(
                f"| {r['model']} | {artifact} | {d['decision']} | {speed} "
                f"| {len(d['float_layers'])} | {d['reason']} |"
            )
    lines += [
        "",
        "## auto after tune",
        "",
        "| model | batch | auto | p50 ms | best file agreeing >= 99% with fp32 | p50 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for batch, p50 in r["latency_ms"].items():
            auto = next(k for k in p50 if k.startswith("auto"))
            best = best_file(r, batch)
            lines.append(
                f"| {r['model']} | {batch} | {auto} | {p50[auto]:.2f} | {best} | {p50[best]:.2f} |"
            )
    lines += [
        "",
        "## Goals",
        "",
        "| model | batch | what | value | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for g in r["goals"]:
            met = "yes" if g["met"] else "**no**"
            lines.append(
                f"| {g['model']} | {g['batch']} | {g['what']} | {g['value']:.3f} "
                f"| {g['target']} | {met} |"
            )
    notes = sorted({f"{k}: {v}" for r in results for k, v in r["could_not_run"].items()})
    if notes:
        lines += ["", "## Files an engine could not run", ""] + [f"- {n}" for n in notes]
    lines += [
        "",
        "TensorRT: the `onnx-int8-tensorrt` file is built into an engine by TensorRT-RTX at export "
        "(engines listed per model in the JSON) and judged on ONNX Runtime's CPU provider; its "
        "speed needs an NVIDIA GPU and is not measured here.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Driver


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=3.0, help="timing per file and batch")
    parser.add_argument("--cache", type=Path, default=CACHE)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / machine_slug() / "quantization",
    )
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="measure a network with no trained weights cached with random ones (agreement "
        "only) instead of training it first",
    )
    parser.add_argument("--one", metavar="MODEL", help=argparse.SUPPRESS)  # the per-model process
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch", "nncf", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.one:
        os.environ["EDGEPORT_CACHE_DIR"] = str(args.cache / "runtime-cache")
        result = measure(args.one, args.cache, batches, args.threads, args.duration_s)
        path = args.out / f"{args.one}.json"
        path.write_text(json.dumps(result, indent=1))
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        print(f"error: unknown models {unknown}; choose from {list(MODELS)}")
        return 2
    for name in names:
        prepare(name, args.cache, train_missing=not args.no_train)
    if args.prepare_only:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:  # one process per model: no engine state carries over
        command = [
            sys.executable,
            __file__,
            "--one",
            name,
            "--batches",
            args.batches,
            "--threads",
            str(args.threads),
            "--duration-s",
            str(args.duration_s),
            "--cache",
            str(args.cache),
            "--out",
            str(args.out),
        ]
        subprocess.run(command, check=True)
    # the tables cover every model measured into --out, by this run or an earlier one
    results = [
        json.loads(path.read_text())
        for name in MODELS
        if (path := args.out / f"{name}.json").is_file()
    ]
    for result in results:  # judged by this version's goals
        result["goals"] = goals(result)
    (args.out / "README.md").write_text(markdown(results))
    met = [g for r in results for g in r["goals"]]
    print(f"\ngoals met: {sum(g['met'] for g in met)} of {len(met)} ({args.out / 'README.md'})")
    for g in met:
        if not g["met"]:
            print(
                f"  NOT MET {g['model']} batch {g['batch']}: {g['what']} = "
                f"{g['value']:.3f} (target {g['target']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
