"""The standard CPU benchmark matrix (``make bench``), all in one run.

simple_cnn_bn (3x32x32), resnet18 and torchvision's mobilenet_v3_small (3x224x224) are trained on
the embedded digits (resized, 3 channels), exported to ONNX fp32, int8 and bf16 (the fp32 file run
with bf16 arithmetic by OpenVINO, where the CPU has it), checked against PyTorch and tuned
(``edgeport tune``), then measured side by side:

- latency at batch 1 and 8: PyTorch eager, torch.compile, bare ONNX Runtime (a plain
  ``InferenceSession`` on the same file, same threads), OpenVINO with its own defaults (a plain
  ``compile_model`` of the fp32 file, same threads: bf16 on CPUs that have it), edgeport's
  onnxruntime-cpu and openvino backends (fp32, int8, bf16), and edgeport ``auto`` (after the
  tune), with auto's p50 over the best peer's per model and batch (goal <= 1.03), head to head
  in interleaved rounds;
- bf16 parity against PyTorch on the held-out digits, from each bundle's manifest (goal: top-1
  agreement >= 99%, accuracy drop <= 0.5 point), with the CPU's precision capabilities;
- ResNet-18 fp32 batch 1 as a share of this CPU's fp32 FMA peak (3.6 GFLOP per image);
- cold start per backend and auto (whole processes, cold and warm caches, memory) against bare
  ONNX Runtime and bare OpenVINO, with edgeport's bytecode compiled first, as a wheel install
  has it (an editable checkout under PYTHONDONTWRITEBYTECODE would compile it in every process);
- MLPerf LoadGen SingleStream and Offline for resnet18 int8 (``--loadgen full``: MLPerf's
  600 s minimum each; ``quick``, the default: about a second each, INVALID by MLPerf's rules;
  ``off``).

Writes JSON, CSV, Markdown and a plot to ``benchmarks/results/<machine>/`` and prints the ratios.

    python benchmarks/run_matrix.py                 # the real run (LoadGen quick)
    python benchmarks/run_matrix.py --loadgen full  # with MLPerf's durations (+20 minutes)
    python benchmarks/run_matrix.py --quick         # a short validation run into runs/
    python benchmarks/run_matrix.py --models resnet18 --keep-others  # one model measured, the
                                                    # summary over it and the others' results
"""

from __future__ import annotations

import argparse
import compileall
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from matrix_lib import (
    BARE_OPENVINO,
    BARE_ORT,
    REPO,
    STANDARD_MODELS,
    bare_openvino_plan,
    bare_ort_plan,
    export_bundle,
    fp32_fma_peak,
    int8_accuracy_lost,
    repo_relative,
    sgemm_gflops,
    test_accuracy,
    timed,
    train_model,
)

log = logging.getLogger("edgeport.benchmarks")

BACKEND = "onnxruntime-cpu"
BACKENDS = ("auto", "onnxruntime-cpu", "openvino")
PRECISIONS = ("fp32", "int8", "bf16")
BARE_PRECISIONS = ("fp32", "int8")  # bare ONNX Runtime's files (it has no bf16 on this CPU)
TORCH_ROWS = ("torch", "torch-compile")
PEERS = ("torch", "torch-compile", BARE_ORT, BARE_OPENVINO, "openvino")  # auto keeps up with these
AUTO_GOAL = 1.03  # auto's p50 / the best peer's, per model and batch
H2H_ROUNDS = 7  # interleaved rounds of the auto-vs-engines head-to-head
RESNET18_GFLOP = 3.6  # per 3x224x224 image (1.8 G multiply-adds)
# Goals measured side by side in one run on the 2-core CPU; printed, not asserted.
TARGETS = (
    ("simple_cnn_bn", "fp32", 4.0, "ONNX Runtime fp32 vs PyTorch eager, batch 1"),
    ("resnet18", "fp32", 1.7, "ONNX Runtime fp32 vs PyTorch eager, batch 1"),
    ("resnet18", "int8", 3.0, "ONNX Runtime int8 vs PyTorch eager, batch 1"),
)
MAX_INT8_LOSS_POINTS = 1.0
BF16_MIN_TOP1 = 0.99  # bf16 against PyTorch on the held-out digits (export's parity gate)
BF16_MAX_LOSS_POINTS = 0.5
LOADGEN_MODEL = "resnet18"
LOADGEN_SCENARIOS = ("single-stream", "offline")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from edgeport.runtime.envinfo import cpu_counts, machine_slug

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run for validation")
    parser.add_argument("--models", default=",".join(STANDARD_MODELS), help="comma-separated")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--baselines", default="torch,torch-compile")
    parser.add_argument("--warmup-s", type=float, help="default 1 (quick: 0.2)")
    parser.add_argument("--duration-s", type=float, help="default 3 (quick: 0.5)")
    parser.add_argument(
        "--threads",
        type=int,
        default=cpu_counts()["usable"],
        help="threads for every engine and PyTorch (default: the usable CPUs)",
    )
    parser.add_argument("--epochs", type=int, help="override every model's training epochs")
    parser.add_argument("--cold-runs", type=int, help="processes per cold-start row (5; quick 2)")
    parser.add_argument(
        "--loadgen",
        choices=("full", "quick", "keep", "off"),
        default="quick",
        help="MLPerf LoadGen for resnet18 int8: full (600 s per scenario), quick (default: "
        "about a second, INVALID), keep (report the results an earlier run saved in --out), off",
    )
    parser.add_argument("--work", type=Path, help="runs and bundles (default runs/bench-matrix)")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results folder (default benchmarks/results/{machine_slug()}; "
        "with --quick runs/bench-quick/<machine>)",
    )
    parser.add_argument("--reuse", action="store_true", help="reuse trained runs and bundles")
    parser.add_argument(
        "--keep-others",
        action="store_true",
        help="report the standard models not in --models from the results an earlier run "
        "wrote to --out (one process per model, the summary over all of them)",
    )
    args = parser.parse_args(argv)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (0.2 if args.quick else 1.0)
    args.duration_s = (
        args.duration_s if args.duration_s is not None else (0.5 if args.quick else 3.0)
    )
    args.cold_runs = args.cold_runs or (2 if args.quick else 5)
    args.work = args.work or REPO / "runs" / ("bench-quick" if args.quick else "bench-matrix")
    if args.out is None:
        base = REPO / "runs" / "bench-quick" if args.quick else REPO / "benchmarks" / "results"
        args.out = base / machine_slug()
    return args


# --------------------------------------------------------------------------------------------
# One model


def _tune(bundle: Path, args: argparse.Namespace) -> Any:
    """``edgeport tune`` on the bundle at the benchmarked batch sizes; the record goes to this
    run's cache, where auto (in the bench and the cold-start processes) finds it."""
    from edgeport.runtime.tools.bench import parse_batches
    from edgeport.runtime.tools.timing import TimingConfig
    from edgeport.runtime.tools.tune import TuneSettings, summary_lines, tune
    from edgeport.runtime.tuning_records import save_record

    settings = TuneSettings(
        batches=parse_batches(args.batches),
        threads=args.threads,
        timing=TimingConfig(warmup_s=args.warmup_s, duration_s=args.duration_s),
        rounds=H2H_ROUNDS,  # as long and as interleaved as the head to head that judges it
    )
    with timed(f"tuning {bundle.parent.name}"):
        record, _ = tune(bundle, settings)
    save_record(record, bundle)
    for line in summary_lines(record):
        log.info("%s", line)
    return record


def _bench(bundle: Path, args: argparse.Namespace) -> Any:
    from edgeport.runtime.tools.bench import BenchSettings, TimingConfig, benchmark, parse_batches
    from edgeport.runtime.tools.bench import parse_list as names

    settings = BenchSettings(
        backends=BACKENDS,
        precisions=PRECISIONS,
        batches=parse_batches(args.batches),
        timing=TimingConfig(warmup_s=args.warmup_s, duration_s=args.duration_s),
        threads=args.threads,
        baselines=names(args.baselines, ("torch", "torch-compile"), "baselines") or (),
    )
    bare = [bare_ort_plan(bundle, p, args.threads) for p in BARE_PRECISIONS]
    bare.append(bare_openvino_plan(bundle, args.threads))
    with timed(f"benchmarking {bundle.parent.name}"):
        return benchmark(bundle, settings, extra_plans=bare)


def run_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from edgeport.runtime.io import atomic_write_json, atomic_write_text
    from edgeport.runtime.tools.check import check
    from edgeport.runtime.tools.coldstart import ColdStartSettings, cold_start, write_coldstart
    from edgeport.runtime.tools.report import bench_markdown, check_markdown, write_bench

    spec = STANDARD_MODELS[name]
    run_dir = train_model(
        spec,
        args.work,
        quick=args.quick,
        reuse=args.reuse,
        threads=args.threads,
        epochs=args.epochs,
    )
    bundle = export_bundle(
        run_dir, args.work / name / "bundle", precisions=PRECISIONS, reuse=args.reuse
    )
    with timed(f"checking {name}"):
        report = check(bundle, backends=(BACKEND, "openvino"), threads=args.threads).to_dict()
    record = _tune(bundle, args)
    result = _bench(bundle, args)
    h2h = head_to_head(name, bundle, result, args)
    with timed(f"cold start of {name} ({args.cold_runs} runs)"):
        cold = cold_start(bundle, ColdStartSettings(runs=args.cold_runs, threads=args.threads))
    out = args.out
    write_bench(result, json_path=out / f"{name}.json", csv_path=out / f"{name}.csv")
    write_coldstart(cold, json_path=out / f"{name}.coldstart.json")
    atomic_write_json(out / f"{name}.check.json", report)
    atomic_write_json(out / f"{name}.tuning.json", record.to_dict())
    atomic_write_json(out / f"{name}.head_to_head.json", h2h)
    md = bench_markdown(result, title=f"{name} {spec.shape}", level=3)
    md += "\n" + check_markdown(report, level=4)
    atomic_write_text(out / f"{name}.md", md)
    return {
        "spec": spec,
        "run_dir": run_dir,
        "bundle": bundle,
        "result": result,
        "check": report,
        "tuning": record,
        "cold": cold,
        "head_to_head": h2h,
    }


@dataclass(frozen=True)
class KeptColdStart:
    """A cold-start result as an earlier run wrote it (``--keep-others``)."""

    rows: list[Any]
    goals: dict[str, float | None]

    def goal(self, state: str) -> float | None:
        return self.goals.get(state)


def kept_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One model's results as an earlier run wrote them to ``args.out`` (``--keep-others``),
    in the form ``run_model`` returns."""
    from edgeport.runtime.tools.bench_result import BenchResult
    from edgeport.runtime.tools.coldstart import ColdStartRow
    from edgeport.runtime.tuning_records import read_record

    def read(suffix: str) -> Any:
        path = args.out / f"{name}.{suffix}"
        if not path.is_file():
            raise SystemExit(f"--keep-others: {path} is missing; run the matrix for {name}")
        return json.loads(path.read_text(encoding="utf-8"))

    cold = read("coldstart.json")
    rows = [
        ColdStartRow(**{**r, "chosen": tuple(r["chosen"]) if r["chosen"] else None})
        for r in cold["rows"]
    ]
    read("tuning.json")  # a clear message when it is missing
    return {
        "spec": STANDARD_MODELS[name],
        "run_dir": args.work / name / "run",
        "bundle": args.work / name / "bundle",
        "result": BenchResult.from_dict(read("json")),
        "check": read("check.json"),
        "tuning": read_record(args.out / f"{name}.tuning.json"),
        "cold": KeptColdStart(rows, {k: cold["goal"].get(k) for k in ("cold", "warm")}),
        "head_to_head": read("head_to_head.json"),
    }


def run_loadgen(models: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[Any]:
    """LoadGen SingleStream and Offline on resnet18 int8, on the backend the tune found
    fastest for int8 at batch 1."""
    from edgeport.runtime.tools.mlperf_loadgen import LoadGenSettings, write_loadgen
    from edgeport.runtime.tools.mlperf_loadgen import run_loadgen as loadgen

    if args.loadgen == "off" or LOADGEN_MODEL not in models:
        return []
    if args.loadgen == "keep":
        return kept_loadgen(args.out)
    m = models[LOADGEN_MODEL]
    timings = m["tuning"].winner_for(1).timings
    backend = next((t.backend for t in timings if t.precision == "int8"), "auto")
    results = []
    for scenario in LOADGEN_SCENARIOS:
        settings = LoadGenSettings(
            scenario=scenario,
            quick=args.loadgen == "quick",
            backend=backend,
            precision="int8",
            threads=args.threads,
        )
        with timed(f"LoadGen {scenario} on {LOADGEN_MODEL} int8 ({backend}, {args.loadgen})"):
            result = loadgen(m["bundle"], settings, args.out / "loadgen" / scenario)
        write_loadgen(result, json_path=args.out / f"{LOADGEN_MODEL}.loadgen-{scenario}.json")
        results.append(result)
    return results


def kept_loadgen(out: Path) -> list[Any]:
    """The LoadGen results an earlier run wrote to ``out`` (``--loadgen keep``)."""
    from edgeport.runtime.tools.mlperf_loadgen import LoadGenResult

    results = []
    for scenario in LOADGEN_SCENARIOS:
        path = out / f"{LOADGEN_MODEL}.loadgen-{scenario}.json"
        if not path.is_file():
            raise SystemExit(f"--loadgen keep: {path} is missing; run with --loadgen full")
        results.append(LoadGenResult.from_dict(json.loads(path.read_text())))
    return results


# --------------------------------------------------------------------------------------------
# What the matrix shows


def goals(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    lines = []
    for name, precision, target, what in TARGETS:
        entry: dict[str, Any] = {"model": name, "what": what, "target": target}
        if name in models:
            row = models[name]["result"].find(BACKEND, precision, 1)
            eager = models[name]["result"].find("torch", "fp32", 1)
            entry.update(
                ratio=row.speedup_vs_eager if row else None,
                ort_p50_ms=row.latency.p50 if row else None,
                eager_p50_ms=eager.latency.p50 if eager else None,
            )
        ratio = entry.get("ratio")
        entry["met"] = ratio is not None and ratio >= target
        lines.append(entry)
    if "resnet18" in models:
        lost = int8_accuracy_lost(models["resnet18"]["check"], BACKEND)
        lines.append(
            {
                "model": "resnet18",
                "what": "int8 accuracy lost on the check data (points)",
                "target": MAX_INT8_LOSS_POINTS,
                "ratio": lost,
                "met": lost is not None and lost <= MAX_INT8_LOSS_POINTS,
            }
        )
    for name, m in models.items():
        parity = bf16_parity(m["bundle"])
        top1, lost = parity.get("top1_agreement"), parity.get("accuracy_lost_points")
        lines += [
            {
                "model": name,
                "what": "bf16 top-1 agreement with PyTorch, held-out digits (%)",
                "target": 100 * BF16_MIN_TOP1,
                "ratio": None if top1 is None else 100 * top1,
                "met": top1 is not None and top1 >= BF16_MIN_TOP1,
            },
            {
                "model": name,
                "what": "bf16 accuracy lost, held-out digits (points)",
                "target": BF16_MAX_LOSS_POINTS,
                "ratio": lost,
                "met": lost is not None and lost <= BF16_MAX_LOSS_POINTS,
            },
        ]
    return lines


def bf16_parity(bundle: Path) -> dict[str, Any]:
    """The bf16 artifact's export parity against PyTorch, from the bundle's manifest: status,
    engine, samples, top-1 agreement, accuracies and the points lost (or why it did not run)."""
    from edgeport.runtime.bundle import Manifest

    art = next((a for a in Manifest.load(bundle).artifacts if a.precision == "bf16"), None)
    if art is None or not art.parity:
        return {"status": "absent"}
    found = {k: art.parity.get(k) for k in ("status", "backend", "count", "reason", "reference")}
    outputs = art.parity.get("outputs") or []
    if outputs:
        c = outputs[0]["comparison"]
        drop = c.get("accuracy_drop")
        found.update(
            top1_agreement=c.get("top1_agreement"),
            cosine_min=c.get("cosine_min"),
            max_abs=c.get("max_abs"),
            accuracy_reference=c.get("accuracy_reference"),
            accuracy_candidate=c.get("accuracy_candidate"),
            accuracy_lost_points=None if drop is None else 100.0 * drop,
        )
    return found


def _measured(s: dict[str, Any]) -> tuple[str, str]:
    """A goal line's measured value and its target, as text."""
    what, value, target = s["what"], s.get("ratio"), s["target"]
    if "(points)" in what:
        return ("-" if value is None else f"{value:.2f} points"), f"<= {target}"
    if "(%)" in what:
        return ("-" if value is None else f"{value:.2f}%"), f">= {target:g}%"
    return ("-" if value is None else f"{value:.2f}x"), f">= {target}x"


def auto_vs_peers(name: str, result: Any) -> list[dict[str, Any]]:
    """Per batch size: auto's p50 over the fastest peer's (PyTorch eager or compiled, bare ONNX
    Runtime, OpenVINO; an int8 peer only when its parity passed)."""
    cells = []
    for batch in sorted({r.batch for r in result.rows}):
        auto = next((r for r in result.rows if r.backend == "auto" and r.batch == batch), None)
        peers = [
            r
            for r in result.rows
            if r.backend in PEERS and r.batch == batch and r.parity_passed is not False
        ]
        if auto is None or not peers:
            continue
        best = min(peers, key=lambda r: r.latency.p50)
        ratio = auto.latency.p50 / best.latency.p50
        cells.append(
            {
                "model": name,
                "batch": batch,
                "auto": auto.label,
                "auto_p50_ms": auto.latency.p50,
                "best_peer": best.label,
                "best_peer_p50_ms": best.latency.p50,
                "ratio": ratio,
                "met": ratio <= AUTO_GOAL,
            }
        )
    return cells


def _engine_steps(
    bundle: Path, result: Any, inputs: dict[str, Any], batch: int, threads: int
) -> tuple[dict[str, Any], list[Any]]:
    """auto and every engine peer as ready calls on the first ``batch`` of ``inputs``: bare ONNX
    Runtime (fp32, int8), OpenVINO with its own defaults, and edgeport's onnxruntime-cpu and
    openvino backends at every precision, each where its parity passed in the sequential rows."""
    from functools import partial

    from edgeport.runtime import load

    feeds = {k: np.ascontiguousarray(v[:batch]) for k, v in inputs.items()}
    passed = {
        (r.backend, r.precision)
        for r in result.rows
        if r.batch == batch and r.parity_passed is not False
    }
    auto = load(bundle, threads=threads, expected_batch=batch)
    steps: dict[str, Any] = {f"auto ({auto.backend} {auto.precision})": partial(auto.infer, feeds)}
    opened = [auto]
    for precision in BARE_PRECISIONS:
        if (BARE_ORT, precision) in passed:
            bare = bare_ort_plan(bundle, precision, threads).open()
            steps[f"{BARE_ORT} {precision}"] = partial(bare.run, feeds)
    defaults = bare_openvino_plan(bundle, threads).open()
    if (BARE_OPENVINO, defaults.precision) in passed:
        steps[f"{BARE_OPENVINO} ({defaults.precision})"] = partial(defaults.run, feeds)
    for backend in BACKENDS[1:]:
        for precision in PRECISIONS:
            if (backend, precision) in passed:
                model = load(bundle, backend=backend, precision=precision, threads=threads)
                opened.append(model)
                steps[f"edgeport {backend} {precision}"] = partial(model.infer, feeds)
    return steps, opened


def head_to_head(name: str, bundle: Path, result: Any, args: argparse.Namespace) -> list[Any]:
    """auto against the engine peers in interleaved rounds (``time_interleaved``), per batch
    size: the goal's measure, since rows timed one after another on a shared VM differ by more
    than the 3% the goal allows."""
    from edgeport.runtime.bundle import Manifest
    from edgeport.runtime.reference import load_reference
    from edgeport.runtime.tools.timing import LatencyStats, TimingConfig, time_interleaved

    reference = load_reference(bundle, Manifest.load(bundle))
    if reference is None:
        raise SystemExit(f"{bundle} stores no reference inputs to time the engines on")
    config = TimingConfig(warmup_s=args.warmup_s, duration_s=args.duration_s)
    cells = []
    for batch in sorted({r.batch for r in result.rows}):
        steps, opened = _engine_steps(bundle, result, reference.inputs, batch, args.threads)
        try:
            with timed(f"{name} batch {batch}: {len(steps)} engines in {H2H_ROUNDS} rounds"):
                samples = time_interleaved(steps, config, H2H_ROUNDS)
        finally:
            for model in opened:
                model.close()
        p50 = {label: LatencyStats.from_samples(ms).p50 for label, ms in samples.items()}
        auto = next(label for label in p50 if label.startswith("auto"))
        best = min((label for label in p50 if label != auto), key=p50.__getitem__)
        ratio = p50[auto] / p50[best]
        cells.append(
            {
                "model": name,
                "batch": batch,
                "auto": auto,
                "auto_p50_ms": p50[auto],
                "best_peer": best,
                "best_peer_p50_ms": p50[best],
                "ratio": ratio,
                "met": ratio <= AUTO_GOAL,
                # the best peer is auto's own choice, opened a second time: the ratio is the
                # spread between two instances of one engine and precision
                "same_as_auto": f"auto ({best.removeprefix('edgeport ')})" == auto,
                "p50_ms": p50,
                "rounds": H2H_ROUNDS,
            }
        )
    return cells


def fma_share(models: dict[str, dict[str, Any]], threads: int) -> dict[str, Any] | None:
    """The fastest fp32 row of resnet18 at batch 1 as a share of this CPU's fp32 FMA peak."""
    if "resnet18" not in models:
        return None
    rows = [
        r
        for r in models["resnet18"]["result"].rows
        if r.batch == 1 and r.precision == "fp32" and r.backend != "auto"
    ]
    if not rows:
        return None
    best = min(rows, key=lambda r: r.latency.p50)
    peak = fp32_fma_peak(threads)
    sgemm = sgemm_gflops()
    achieved = RESNET18_GFLOP / (best.latency.p50 / 1000)
    return {
        **peak,
        "row": best.label,
        "p50_ms": best.latency.p50,
        "achieved_gflops": achieved,
        "share": achieved / peak["gflops"] if peak["gflops"] else None,
        "sgemm_gflops": sgemm,
        "share_of_sgemm": achieved / sgemm,
    }


def _latency_grid(models: dict[str, dict[str, Any]]) -> list[str]:
    from edgeport.runtime.tools.formatting import fmt_ms

    columns = [
        ("eager fp32", "torch", "fp32"),
        ("compile fp32", "torch-compile", "fp32"),
        ("bare ORT fp32", BARE_ORT, "fp32"),
        ("bare ORT int8", BARE_ORT, "int8"),
        ("edgeport ORT fp32", "onnxruntime-cpu", "fp32"),
        ("edgeport ORT int8", "onnxruntime-cpu", "int8"),
        ("edgeport OV fp32", "openvino", "fp32"),
        ("edgeport OV int8", "openvino", "int8"),
        ("edgeport OV bf16", "openvino", "bf16"),
        ("OpenVINO defaults", BARE_OPENVINO, None),
    ]
    lines = [
        "| model | batch | " + " | ".join(c[0] for c in columns) + " | auto (its choice) |",
        "|---|---|" + "---|" * (len(columns) + 1),
    ]
    for name, m in models.items():
        result = m["result"]
        for batch in sorted({r.batch for r in result.rows}):
            cells = []
            for _, backend, precision in columns:
                row = next(
                    (
                        r
                        for r in result.rows
                        if r.backend == backend
                        and r.batch == batch
                        and precision in (None, r.precision)
                    ),
                    None,
                )
                text = fmt_ms(row.latency.p50) if row else "-"
                cells.append(f"{text} ({row.precision})" if row and precision is None else text)
            auto = next((r for r in result.rows if r.backend == "auto" and r.batch == batch), None)
            cells.append(f"{fmt_ms(auto.latency.p50)} ({auto.label})" if auto else "-")
            lines.append(f"| {name} | {batch} | " + " | ".join(cells) + " |")
    return lines


def _cold_lines(models: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| model | state | what | total s | import s | load s | first result s | "
        "RSS after load MiB | vs bare ORT | vs bare engine |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in models.items():
        for r in m["cold"].rows:
            what = f"auto ({r.chosen[0]} {r.chosen[1]})" if r.subject == "auto" else r.subject
            ratio = "-" if r.vs_bare_onnxruntime is None else f"{r.vs_bare_onnxruntime:.2f}x"
            engine = "-" if r.vs_bare_engine is None else f"{r.vs_bare_engine:.2f}x"
            rss = "-" if r.rss_after_load_mib is None else f"{r.rss_after_load_mib:.0f}"
            lines.append(
                f"| {name} | {r.state} | {what} | {r.total_s:.3f} | {r.parts['import_s']:.3f} | "
                f"{r.parts['load_s']:.3f} | {r.parts['first_result_s']:.3f} | {rss} | {ratio} | "
                f"{engine} |"
            )
    return lines


def fixed_rule_cells(name: str, bundle: Path, record: Any) -> list[dict[str, Any]]:
    """Per batch size, from tune's interleaved timings: tune's winner, what the fixed rule
    opens here without a tuning record (on a CPU with bf16: BF16_CPU_FIRST first) and what
    ONNX Runtime fp32 first (the rule elsewhere) gives, each p50 over the winner's."""
    from edgeport.runtime.backends.registry import plan
    from edgeport.runtime.source import resolve_source

    source = resolve_source(bundle)
    to_open, _ = plan(source.candidates, backend="auto", precision=None, device_kind="cpu")
    rule = (to_open[0][0], to_open[0][1].label) if to_open else None
    labels = {c.label: c.precision for c in source.candidates}
    cells = []
    for entry in record.batches:
        p50 = {(t.backend, t.artifact): t.p50_ms for t in entry.timings}
        best = entry.winner.p50_ms
        rule_ms, ort_ms = p50.get(rule) if rule else None, p50.get((BACKEND, "onnx-fp32"))
        cells.append(
            {
                "model": name,
                "batch": entry.batch,
                "tuned": f"{entry.winner.backend} {entry.winner.precision}",
                "tuned_p50_ms": best,
                "rule": f"{rule[0]} {labels[rule[1]]}" if rule else None,
                "rule_p50_ms": rule_ms,
                "rule_ratio": None if rule_ms is None else rule_ms / best,
                "ort_fp32_p50_ms": ort_ms,
                "ort_fp32_ratio": None if ort_ms is None else ort_ms / best,
                "p50_ms": {f"{t.backend} {t.precision}": t.p50_ms for t in entry.timings},
            }
        )
    return cells


def _rule_table(cells: list[dict[str, Any]]) -> list[str]:
    from edgeport.runtime.tools.formatting import fmt_ms

    def pick(ms: float | None, ratio: float | None) -> str:
        return "-" if ms is None or ratio is None else f"{fmt_ms(ms)} ({ratio:.2f}x)"

    lines = [
        "| model | batch | tune's winner | fixed rule here | its p50 ms (x winner) | "
        "ONNX Runtime fp32 first: p50 ms (x winner) | every candidate, p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        every = ", ".join(f"{k} {fmt_ms(v)}" for k, v in sorted(c["p50_ms"].items()))
        lines.append(
            f"| {c['model']} | {c['batch']} | {c['tuned']} {fmt_ms(c['tuned_p50_ms'])} | "
            f"{c['rule']} | {pick(c['rule_p50_ms'], c['rule_ratio'])} | "
            f"{pick(c['ort_fp32_p50_ms'], c['ort_fp32_ratio'])} | {every} |"
        )
    return lines


def _torch_sentence(models: dict[str, dict[str, Any]]) -> str:
    """Whether PyTorch (eager, compiled) is slower than the fastest engine in every cell."""
    behind = []
    for name, m in models.items():
        rows = m["result"].rows
        for batch in sorted({r.batch for r in rows}):
            here = [r for r in rows if r.batch == batch and r.backend != "auto"]
            torch = [r.latency.p50 for r in here if r.backend in TORCH_ROWS]
            engines = [r.latency.p50 for r in here if r.backend not in TORCH_ROWS]
            if torch and engines and min(torch) <= min(engines):
                behind.append(f"{name} batch {batch}")
    if behind:
        return f"PyTorch is as fast as the fastest engine in: {', '.join(behind)}."
    return (
        "PyTorch eager and torch.compile are slower than the fastest engine in every cell of "
        "the grid below."
    )


AGAIN = " (auto's own choice, opened again)"


def _auto_table(cells: list[dict[str, Any]]) -> list[str]:
    from edgeport.runtime.tools.formatting import fmt_ms

    return [
        "| model | batch | auto | auto p50 ms | best peer | peer p50 ms | ratio | met |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {c['model']} | {c['batch']} | {c['auto']} | {fmt_ms(c['auto_p50_ms'])} | "
            f"{c['best_peer']}{AGAIN if c.get('same_as_auto') else ''} | "
            f"{fmt_ms(c['best_peer_p50_ms'])} | {c['ratio']:.3f} | "
            f"{'yes' if c['met'] else '**no**'} |"
            for c in cells
        ),
    ]


def _loadgen_lines(loadgen: Sequence[Any], mode: str) -> list[str]:
    if not loadgen:
        return [f"Not run (`--loadgen {mode}`)."]
    lines = ["| scenario | backend | metric | value | result | why |", "|---|---|---|---|---|---|"]
    for r in loadgen:
        s = r.summary
        value = "-" if s.value is None else f"{s.value:.4g} {s.unit}"
        why = "; ".join(s.reasons[:2]) or "-"
        lines.append(
            f"| {r.settings.scenario} | {r.model['backend']} {r.model['precision']} | "
            f"{s.metric} | {value} | {'VALID' if s.valid else 'INVALID'} | {why} |"
        )
    if mode == "keep":
        lines += ["", f"(kept from the run of {', '.join(sorted({r.created for r in loadgen}))})"]
    return lines


def summary_markdown(
    models: dict[str, dict[str, Any]],
    shown: list[dict[str, Any]],
    auto_cells: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    peak: dict[str, Any] | None,
    loadgen: Sequence[Any],
    args: argparse.Namespace,
    rules: list[dict[str, Any]],
) -> str:
    from edgeport.runtime.tools.formatting import fmt_ms, fmt_pct

    cells, sequential = auto_cells

    from edgeport.runtime.cpu_features import describe_line

    first = next(iter(models.values()))["result"]
    env = first.environment
    cpu = env["cpu"]
    lines = [
        f"# CPU benchmark matrix: {cpu['model']} ({cpu['usable']} CPUs)",
        "",
        "Measured with `python benchmarks/run_matrix.py`, each model's rows, tuning and head "
        "to head in one process: "
        + "; ".join(
            f"{name} {m['result'].created} (load average before "
            f"{m['result'].environment.get('load_average')})"
            for name, m in models.items()
        )
        + f". Threads {first.config.get('threads')}, warm-up {first.config['warmup_s']} s, "
        f"{first.config['duration_s']} s per row. Speed-up = PyTorch eager fp32 p50 / row p50. "
        "auto = "
        '`load(backend="auto", expected_batch=batch)` after `edgeport tune` on the bundle.',
        "",
        f"CPU precision capabilities: {describe_line(args.cpu_precisions)}.",
        "",
        "## Goals",
        "",
        "| model | measure | measured | target | met |",
        "|---|---|---|---|---|",
    ]
    for s in shown:
        measured, target = _measured(s)
        lines.append(
            f"| {s['model']} | {s['what']} | {measured} | {target} | "
            f"{'yes' if s['met'] else '**no**'} |"
        )
    lines += [
        "",
        f"## edgeport auto against the best peer (goal <= {AUTO_GOAL})",
        "",
        "Head to head: auto and every engine peer (bare ONNX Runtime fp32 and int8, OpenVINO with "
        "its own defaults, edgeport's onnxruntime-cpu and openvino backends at fp32, int8 and "
        "bf16; each where its parity passed) loaded together and timed in "
        f"{H2H_ROUNDS} interleaved rounds on "
        f"the same reference inputs (p50 of all rounds' calls). {_torch_sentence(models)}",
        "",
        *_auto_table(cells),
        "",
        "The same from the rows of the grid below, timed one after another (PyTorch included): "
        "on this shared VM rows that far apart in time differ by more than the goal's 3%.",
        "",
        *_auto_table(sequential),
    ]
    lines += [
        "",
        "## The fixed rule on this CPU (no tuning record)",
        "",
        "What `auto` opens without a tuning record (the fixed rule as it applies to this CPU) "
        "and what ONNX Runtime fp32 first (the rule on CPUs without bf16) would give, against "
        "tune's winner, from tune's interleaved timings of every candidate:",
        "",
        *_rule_table(rules),
        "",
        "## Latency p50 (ms)",
        "",
        *_latency_grid(models),
    ]
    if peak is not None:
        share = fmt_pct(peak["share"], 1) if peak["share"] is not None else "-"
        lines += [
            "",
            "## ResNet-18 fp32, batch 1, against the FMA peak",
            "",
            f"{peak['row']}: {fmt_ms(peak['p50_ms'])} ms = {peak['achieved_gflops']:.1f} "
            f"GFLOP/s ({RESNET18_GFLOP} GFLOP per image) = **{share}** of this CPU's fp32 peak "
            f"{peak['gflops'] or 0:.1f} GFLOP/s ({peak['cores']} cores x 2 FMA units x "
            f"{peak['fp32_lanes']} fp32 lanes ({peak['isa']}) x 2 flop x "
            f"{peak['ghz'] or 0:.2f} GHz, "
            f"{peak['clock_source']}). Measured ceiling: numpy float32 2048x2048 matmul "
            f"{peak['sgemm_gflops']:.1f} GFLOP/s, of which this is "
            f"**{fmt_pct(peak['share_of_sgemm'], 1)}** (a share above 100% of the theoretical "
            "peak means the cores run above the clock the VM reports).",
        ]
    lines += [
        "",
        "## Cold start (whole processes; median; memory)",
        "",
        "Each row is a fresh `python -c` process: import, load, one sample, exit. cold = an "
        "empty edgeport cache (OpenVINO compiles), warm = the next process on it. Per model: "
        "[model].coldstart.json.",
        "",
        *_cold_lines(models),
        "",
        f"## MLPerf LoadGen ({LOADGEN_MODEL} int8, `--loadgen {args.loadgen}`)",
        "",
        *_loadgen_lines(loadgen, args.loadgen),
        "",
        "Per-model tables: " + ", ".join(f"[{n}]({n}.md)" for n in models) + ".",
        "",
        "![latency and throughput](latency.png)",
        "",
    ]
    return "\n".join(lines)


def relativize_results(out: Path) -> None:
    """Paths of this checkout in the results (the bundles a cold start timed, the tuning
    records auto followed) made relative to the repository: committed results name no folder
    of the machine they ran on."""
    from edgeport.runtime.io import atomic_write_text

    prefix = f"{REPO}/"
    for path in sorted(out.rglob("*")):
        if path.suffix not in (".json", ".md", ".csv", ".txt") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        if prefix in text:
            atomic_write_text(path, text.replace(prefix, ""))


def compile_edgeport() -> None:
    """Write the bytecode of every edgeport package, as installing a wheel does, so that the
    cold-start processes time an install, not the compiler."""
    import edgeport

    for folder in edgeport.__path__:
        if not compileall.compile_dir(folder, quiet=1):
            raise SystemExit(f"error: compiling the modules in {folder} failed")
        log.info("compiled the bytecode of %s", folder)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("onnxscript", "onnx_ir", "torch", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = parse_args(argv)
    # tuning records and compiled models of this run stay in its work folder
    os.environ["EDGEPORT_CACHE_DIR"] = str(args.work.resolve() / "cache")
    # paths inside the repository are used (and so recorded in the results) relative to it
    args.work, args.out = (Path(repo_relative(p.resolve())) for p in (args.work, args.out))
    os.chdir(REPO)
    from edgeport.runtime.cpu_features import describe as describe_cpu
    from edgeport.runtime.cpu_features import describe_line
    from edgeport.runtime.envinfo import collect_environment
    from edgeport.runtime.io import atomic_write_json, atomic_write_text
    from edgeport.runtime.tools.report import write_plot

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in STANDARD_MODELS]
    if unknown:
        print(f"error: unknown models {unknown}; choose from {list(STANDARD_MODELS)}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    args.cpu_precisions = describe_cpu()
    log.info("results go to %s; environment: %s", args.out, collect_environment()["cpu"])
    log.info("cpu precisions: %s", describe_line(args.cpu_precisions))
    compile_edgeport()
    models = {
        name: run_model(name, args) if name in names else kept_model(name, args)
        for name in STANDARD_MODELS
        if name in names or args.keep_others
    }
    loadgen = run_loadgen(models, args)
    shown = goals(models)
    cells = [c for m in models.values() for c in m["head_to_head"]]
    sequential = [c for name, m in models.items() for c in auto_vs_peers(name, m["result"])]
    peak = fma_share(models, args.threads)
    rules = [c for n, m in models.items() for c in fixed_rule_cells(n, m["bundle"], m["tuning"])]
    write_plot([m["result"] for m in models.values()], args.out / "latency.png")
    atomic_write_text(
        args.out / "README.md",
        summary_markdown(models, shown, (cells, sequential), peak, loadgen, args, rules),
    )
    atomic_write_json(
        args.out / "matrix.json",
        {
            "schema": "edgeport.bench-matrix",
            "schema_version": 3,
            "goals": shown,
            "auto_vs_best_peer": cells,
            "auto_vs_best_peer_sequential": sequential,
            "fixed_rule": rules,
            "resnet18_fp32_fma_peak": peak,
            "cold_start_goal": {
                n: {"cold": m["cold"].goal("cold"), "warm": m["cold"].goal("warm")}
                for n, m in models.items()
            },
            "loadgen": [r.to_dict() for r in loadgen],
            "trained_accuracy": {n: test_accuracy(m["run_dir"]) for n, m in models.items()},
            "int8_accuracy_lost_points": {
                n: int8_accuracy_lost(m["check"], BACKEND) for n, m in models.items()
            },
            "bf16_parity": {n: bf16_parity(m["bundle"]) for n, m in models.items()},
            "cpu_precisions": args.cpu_precisions,
            "settings": {
                k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items()
                if k != "cpu_precisions"
            },
            "environment": next(iter(models.values()))["result"].environment,
        },
    )
    relativize_results(args.out)
    _print_summary(args, shown, cells, peak, models, loadgen)
    return 0


def _print_summary(
    args: argparse.Namespace,
    shown: list[dict[str, Any]],
    cells: list[dict[str, Any]],
    peak: dict[str, Any] | None,
    models: dict[str, dict[str, Any]],
    loadgen: Sequence[Any],
) -> None:
    from edgeport.runtime.cpu_features import describe_line

    print()
    print(f"CPU precision capabilities: {describe_line(args.cpu_precisions)}")
    print(f"Goals ({args.out}):")
    for s in shown:
        value, target = _measured(s)
        print(
            f"  {s['model']:<18} {s['what']:<56} {value:>12}  target {target}  "
            f"{'MET' if s['met'] else 'NOT MET'}"
        )
    print(f"auto / best engine peer, interleaved rounds (goal <= {AUTO_GOAL}):")
    for c in cells:
        print(
            f"  {c['model']:<18} batch {c['batch']:<3} {c['auto']:<28} vs {c['best_peer']:<28} "
            f"{c['ratio']:.3f}  {'MET' if c['met'] else 'NOT MET'}"
        )
    if peak is not None and peak["share"] is not None:
        print(
            f"resnet18 fp32 batch 1 ({peak['row']}): {peak['share']:.1%} of the fp32 FMA peak, "
            f"{peak['share_of_sgemm']:.1%} of a numpy sgemm"
        )
    for name, m in models.items():
        cold, warm = m["cold"].goal("cold"), m["cold"].goal("warm")
        if cold is not None and warm is not None:
            print(
                f"cold start {name}: auto / bare ONNX Runtime = {cold:.2f}x cold, "
                f"{warm:.2f}x warm (goal <= 1.3)"
            )
    for r in loadgen:
        verdict = "VALID" if r.summary.valid else "INVALID"
        print(f"LoadGen {r.settings.scenario}: {r.summary.metric} {r.summary.value} ({verdict})")
    print(json.dumps({s["model"] + " " + s["what"]: s.get("ratio") for s in shown}))


if __name__ == "__main__":
    sys.exit(main())
