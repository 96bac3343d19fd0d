"""Writing benchmark and check results: JSON (versioned schema), CSV, Markdown and a PNG plot.

Every file is written atomically. matplotlib is not a runtime dependency: :func:`write_plot`
imports it only when called and raises ``BackendUnavailable`` when it is missing.

The benchmark JSON (``schema: "edgeport.bench"``, ``schema_version: 1``) is described field by
field in ``BENCH_JSON_FIELDS`` / ``BENCH_ROW_FIELDS`` below; :func:`validate_bench_dict` checks a
loaded document against them (the README's table is generated from the same lists).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeport.runtime.errors import BackendUnavailable, InputError
from edgeport.runtime.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from edgeport.runtime.tools.bench import (
    CUDA_GRAPH,
    RESULT_SCHEMA,
    RESULT_SCHEMA_VERSION,
    BenchResult,
    BenchRow,
)

# (field, JSON type(s), meaning): the documented schema of a benchmark result.
BENCH_JSON_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("schema", ("string",), 'always "edgeport.bench"'),
    ("schema_version", ("integer",), "1; bumped on any incompatible change"),
    ("created", ("string",), "UTC time the run ended, ISO 8601"),
    (
        "bundle",
        ("object",),
        "path, manifest_sha256, architecture, input_shape, num_classes, "
        "artifacts {name: sha256}, created",
    ),
    (
        "config",
        ("object",),
        "scenario, batches, backends, precisions, baselines, threads, cuda_graph, "
        "compile_precisions, extra, warmup_s, duration_s, iterations, min_iterations, cv_warning, "
        "inputs, speedup",
    ),
    (
        "environment",
        ("object",),
        "machine slug, cpu {model, logical, physical, usable, arch}, "
        "threads, load_average, gpus [{name, driver, memory, compute_capability, bus}], "
        "cuda_driver, os, python, packages {name: version}",
    ),
    ("rows", ("array",), "one object per (backend, precision, device, cuda_graph, batch); below"),
    (
        "skipped",
        ("array",),
        "[{backend, precision, device, reason, artifact, batch}]: what could "
        "not be measured here and why",
    ),
    (
        "parity",
        ("object",),
        "per candidate label: {count, top1_agreement, max_abs, nonfinite, "
        "reference} against the bundle's stored PyTorch fp32 logits",
    ),
    (
        "summary",
        ("object",),
        "single_stream: [{backend, precision, device, cuda_graph, p90_ms, "
        "speedup_vs_eager}] at batch 1, fastest first; offline: [{backend, precision, device, "
        "cuda_graph, batch, throughput_ips}], peak per candidate, highest first",
    ),
    ("warnings", ("array",), "run-level warnings (strings)"),
)
BENCH_ROW_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "backend",
        ("string",),
        "onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt, tensorrt (edgeport); "
        "torch, torch-compile, torch-cuda-graph (baselines)",
    ),
    ("kind", ("string",), '"edgeport" (runtime backend) or "baseline" (PyTorch)'),
    ("precision", ("string",), "fp32, fp16 or int8"),
    ("device", ("string",), "cpu or cuda"),
    ("artifact", ("string", "null"), "bundle artifact name (null for baselines)"),
    ("cuda_graph", ("boolean",), "whether calls replay a captured CUDA graph"),
    ("batch", ("integer",), "images per call"),
    (
        "timer",
        ("string",),
        "perf_counter_ns (host clock around a synchronous call), "
        "cuda-events (cuda-python) or torch.cuda.Event",
    ),
    ("iterations", ("integer",), "timed calls after warm-up"),
    (
        "latency_ms",
        ("object",),
        "count, mean, std, min, max, p50, p90, p95, p99, cv (ms; cv = std / mean)",
    ),
    ("throughput_ips", ("number",), "images per second = batch * 1000 / mean latency"),
    ("stages_ms", ("object", "null"), "GPU only: {h2d, compute, d2h}, each like latency_ms"),
    (
        "speedup_vs_eager",
        ("number", "null"),
        "PyTorch eager fp32 p50 / this row's p50, same "
        "device and batch; null when eager did not run",
    ),
    (
        "parity",
        ("object",),
        "{top1_agreement, max_abs} of this candidate against the stored "
        "PyTorch fp32 reference (nulls when the bundle has none)",
    ),
    ("warnings", ("array",), "e.g. high coefficient of variation"),
)
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}
CSV_COLUMNS = (
    "backend",
    "kind",
    "precision",
    "device",
    "artifact",
    "cuda_graph",
    "batch",
    "timer",
    "iterations",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "cv",
    "throughput_ips",
    "h2d_p50_ms",
    "compute_p50_ms",
    "d2h_p50_ms",
    "speedup_vs_eager",
    "parity_top1",
    "parity_max_abs",
    "warnings",
)


# --------------------------------------------------------------------------------------------
# Schema


def _type_ok(value: Any, kinds: tuple[str, ...]) -> bool:
    for kind in kinds:
        if kind in ("integer", "number") and isinstance(value, bool):
            continue
        if isinstance(value, _JSON_TYPES[kind]):
            return True
    return False


def validate_bench_dict(data: Any) -> list[str]:
    """Problems of a loaded benchmark JSON against the documented schema; empty = valid."""
    if not isinstance(data, dict):
        return [f"a benchmark result is a JSON object, got {type(data).__name__}"]
    problems = []
    for name, kinds, _ in BENCH_JSON_FIELDS:
        if name not in data:
            problems.append(f"missing field {name!r}")
        elif not _type_ok(data[name], kinds):
            problems.append(f"field {name!r} should be {'/'.join(kinds)}")
    if data.get("schema") != RESULT_SCHEMA:
        problems.append(f"schema is {data.get('schema')!r}, expected {RESULT_SCHEMA!r}")
    if data.get("schema_version") != RESULT_SCHEMA_VERSION:
        problems.append(f"schema_version is {data.get('schema_version')!r}")
    for i, row in enumerate(data.get("rows") or []):
        if not isinstance(row, dict):
            problems.append(f"rows[{i}] is not an object")
            continue
        for name, kinds, _ in BENCH_ROW_FIELDS:
            if name not in row:
                problems.append(f"rows[{i}] missing {name!r}")
            elif not _type_ok(row[name], kinds):
                problems.append(f"rows[{i}].{name} should be {'/'.join(kinds)}")
        lat = row.get("latency_ms") or {}
        for key in ("count", "mean", "std", "min", "max", "p50", "p90", "p95", "p99", "cv"):
            if not _type_ok(lat.get(key), ("number",)):
                problems.append(f"rows[{i}].latency_ms.{key} should be a number")
        if isinstance(lat.get("min"), (int, float)) and isinstance(lat.get("max"), (int, float)):
            values = [lat.get(k) for k in ("min", "p50", "p90", "p95", "p99", "max")]
            ordered = [float(v) for v in values if isinstance(v, (int, float))]
            if len(ordered) == len(values) and ordered != sorted(ordered):
                problems.append(f"rows[{i}].latency_ms percentiles are not ordered: {ordered}")
    return problems


def schema_markdown() -> str:
    """The schema as Markdown tables (for the README)."""
    lines = ["| field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | {' or '.join(k)} | {m} |" for n, k, m in BENCH_JSON_FIELDS]
    lines += ["", "Each element of `rows`:", "", "| field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | {' or '.join(k)} | {m} |" for n, k, m in BENCH_ROW_FIELDS]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Formatting helpers


def fmt_ms(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.2f}"
    return f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt_pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f}%"


def fmt_g(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _backend_cell(backend: str, cuda_graph: bool) -> str:
    return backend + (" +graph" if cuda_graph and backend != CUDA_GRAPH else "")


# --------------------------------------------------------------------------------------------
# Benchmark results


def bench_csv(result: BenchResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in result.rows:
        lat = r.latency
        stage = r.stages or {}
        writer.writerow(
            [
                r.backend,
                r.kind,
                r.precision,
                r.device,
                r.artifact or "",
                int(r.cuda_graph),
                r.batch,
                r.timer,
                lat.count,
                f"{lat.mean:.6f}",
                f"{lat.std:.6f}",
                f"{lat.min:.6f}",
                f"{lat.max:.6f}",
                f"{lat.p50:.6f}",
                f"{lat.p90:.6f}",
                f"{lat.p95:.6f}",
                f"{lat.p99:.6f}",
                f"{lat.cv:.6f}",
                f"{r.throughput:.3f}",
                *(f"{stage[s].p50:.6f}" if s in stage else "" for s in ("h2d", "compute", "d2h")),
                "" if r.speedup_vs_eager is None else f"{r.speedup_vs_eager:.4f}",
                "" if r.parity_top1 is None else f"{r.parity_top1:.6f}",
                "" if r.parity_max_abs is None else f"{r.parity_max_abs:.6g}",
                "; ".join(r.warnings),
            ]
        )
    return buffer.getvalue()


def _env_line(env: dict[str, Any]) -> str:
    cpu = env.get("cpu") or {}
    parts = [
        f"CPU {cpu.get('model', '?')} ({cpu.get('usable', '?')} usable of "
        f"{cpu.get('logical', '?')} logical CPUs)"
    ]
    for gpu in env.get("gpus") or []:
        parts.append(
            f"GPU {gpu.get('name')} (driver {gpu.get('driver')}, CUDA {env.get('cuda_driver')})"
        )
    pkgs = env.get("packages") or {}
    libs = ", ".join(
        f"{k} {pkgs[k]}"
        for k in ("onnxruntime", "onnxruntime-gpu", "torch", "tensorrt")
        if k in pkgs
    )
    if libs:
        parts.append(libs)
    if env.get("load_average"):
        parts.append(f"load average {env['load_average'][0]}")
    return "; ".join(parts)


def bench_markdown(result: BenchResult, *, title: str | None = None, level: int = 2) -> str:
    """A readable report: settings, environment, one row per measurement, the two scenarios."""
    h = "#" * level
    b = result.bundle
    shape = "x".join(str(v) for v in b.get("input_shape", []))
    cfg = result.config
    arch = b.get("architecture", "?")
    lines = [f"{h} {title or f'Benchmark: {arch} ({shape})'}", ""]
    threads = cfg.get("threads") or "default"
    timing = (
        f"{cfg.get('iterations')} iterations"
        if cfg.get("iterations")
        else f"{cfg.get('duration_s')} s per row"
    )
    lines.append(
        f"{_env_line(result.environment)}. Threads: {threads}. Warm-up {cfg.get('warmup_s')} s, "
        f"{timing}. Inputs: {cfg.get('inputs')}. Speed-up = PyTorch eager fp32 p50 / row p50 "
        f"(same device, same batch). Created {result.created}."
    )
    lines.append("")
    with_stages = any(r.stages for r in result.rows)
    header = [
        "backend",
        "precision",
        "device",
        "batch",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ms",
        "CV",
        "img/s",
    ]
    if with_stages:
        header += ["H2D ms", "compute ms", "D2H ms"]
    header += ["speed-up vs eager", "top-1 vs ref", "max abs vs ref"]
    rows = []
    for r in sorted(
        result.rows, key=lambda r: (r.device, r.batch, r.kind != "baseline", r.backend)
    ):
        lat = r.latency
        cells = [
            _backend_cell(r.backend, r.cuda_graph),
            r.precision,
            r.device,
            str(r.batch),
            fmt_ms(lat.p50),
            fmt_ms(lat.p90),
            fmt_ms(lat.p99),
            fmt_ms(lat.mean),
            f"{lat.cv:.1%}" + (" ⚠" if r.warnings else ""),
            f"{r.throughput:,.0f}",
        ]
        if with_stages:
            stage = r.stages or {}
            cells += [
                fmt_ms(stage[s].p50) if s in stage else "-" for s in ("h2d", "compute", "d2h")
            ]
        cells += [fmt_ratio(r.speedup_vs_eager), fmt_pct(r.parity_top1, 1), fmt_g(r.parity_max_abs)]
        rows.append(cells)
    lines += _table(header, rows)
    scenario = cfg.get("scenario", "both")
    single = result.single_stream() if scenario in ("single-stream", "both") else []
    if single:
        lines += ["", "Single-stream (batch 1, p90 latency, fastest first):", ""]
        lines += _table(
            ["backend", "precision", "device", "p90 ms", "speed-up vs eager"],
            [
                [
                    _backend_cell(d["backend"], d["cuda_graph"]),
                    d["precision"],
                    d["device"],
                    fmt_ms(d["p90_ms"]),
                    fmt_ratio(d["speedup_vs_eager"]),
                ]
                for d in single
            ],
        )
    offline = result.offline() if scenario in ("offline", "both") else []
    if offline:
        lines += ["", "Offline (peak throughput over the batch sizes):", ""]
        lines += _table(
            ["backend", "precision", "device", "batch", "img/s"],
            [
                [
                    _backend_cell(d["backend"], d["cuda_graph"]),
                    d["precision"],
                    d["device"],
                    str(d["batch"]),
                    f"{d['throughput_ips']:,.0f}",
                ]
                for d in offline
            ],
        )
    if result.skipped:
        lines += ["", "Not measured here:", ""]
        groups: dict[tuple[str, str, str], list[str]] = {}
        for s in result.skipped:
            what = " ".join(x for x in (s.precision, f"batch {s.batch}" if s.batch else None) if x)
            groups.setdefault((s.backend, s.device or "", s.reason), []).append(what)
        for (backend, device, reason), whats in groups.items():
            detail = ", ".join(w for w in dict.fromkeys(whats) if w)
            where = " ".join(x for x in (backend, device and f"on {device}") if x)
            lines.append(f"- {where}{f' ({detail})' if detail else ''}: {reason}")
    warnings = list(result.warnings) + sorted(
        {f"{r.label} batch {r.batch}: {w}" for r in result.rows for w in r.warnings}
    )
    if warnings:
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def write_bench(
    result: BenchResult,
    *,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
    plot_path: str | Path | None = None,
) -> list[Path]:
    """Write whichever outputs are asked for; returns the paths written."""
    written = []
    if json_path:
        written.append(atomic_write_json(json_path, result.to_dict()))
    if csv_path:
        written.append(atomic_write_text(csv_path, bench_csv(result)))
    if markdown_path:
        written.append(atomic_write_text(markdown_path, bench_markdown(result)))
    if plot_path:
        written.append(write_plot([result], plot_path))
    return written


def _matplotlib() -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BackendUnavailable(
            "--plot needs matplotlib, which edgeport-runtime does not install: "
            "pip install matplotlib (it comes with edgeport-train)"
        ) from exc
    return Figure, FigureCanvasAgg


def write_plot(
    results: Sequence[BenchResult], path: str | Path, *, title: str | None = None
) -> Path:
    """PNG: per result (one model) a row of two panels: p50 (solid) and p99 (dashed) latency vs
    batch, and throughput vs batch; one colour per backend/precision/device."""
    if not results or not any(r.rows for r in results):
        raise InputError("nothing to plot: the benchmark has no measured rows")
    figure_cls, canvas_cls = _matplotlib()
    fig = figure_cls(figsize=(12, 4.2 * len(results)), layout="constrained")
    canvas_cls(fig)
    axes = fig.subplots(len(results), 2, squeeze=False)
    for (ax_lat, ax_tp), result in zip(axes, results, strict=True):
        series: dict[str, list[BenchRow]] = {}
        for r in result.rows:
            series.setdefault(f"{r.label} ({r.device})", []).append(r)
        for label, rows in sorted(series.items()):
            rows = sorted(rows, key=lambda r: r.batch)
            batches = [r.batch for r in rows]
            (line,) = ax_lat.plot(
                batches, [r.latency.p50 for r in rows], "o-", label=f"{label} p50"
            )
            ax_lat.plot(
                batches,
                [r.latency.p99 for r in rows],
                "x--",
                color=line.get_color(),
                label=f"{label} p99",
            )
            ax_tp.plot(
                batches, [r.throughput for r in rows], "o-", color=line.get_color(), label=label
            )
        b = result.bundle
        name = f"{b.get('architecture', '?')} {'x'.join(map(str, b.get('input_shape', [])))}"
        all_batches = sorted({r.batch for r in result.rows})
        for ax in (ax_lat, ax_tp):
            ax.set_xscale("log", base=2)
            ax.set_xticks(all_batches, [str(v) for v in all_batches])
            ax.set_xticks([], minor=True)
            ax.set_yscale("log")
            ax.set_xlabel("batch size")
            ax.grid(True, which="both", alpha=0.3)
        ax_lat.set_ylabel("latency per call (ms)")
        ax_lat.set_title(f"{name}: latency (p50 solid, p99 dashed)")
        ax_tp.set_ylabel("throughput (images/s)")
        ax_tp.set_title(f"{name}: throughput")
        ax_tp.legend(fontsize=7, loc="best")
    machine = results[0].environment.get("machine", "")
    fig.suptitle(title or f"edgeport bench on {machine}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return atomic_write_bytes(path, buffer.getvalue())


# --------------------------------------------------------------------------------------------
# Check reports


def check_markdown(report: dict[str, Any], *, level: int = 2) -> str:
    """Markdown for a ``CheckReport.to_dict()``: the verdict, one row per output of every run,
    what failed and why, the worst samples of logits, per-layer reports and what was skipped."""
    h = "#" * level
    model = report.get("model", {})
    name = model.get("architecture") or Path(str(model.get("path", "?"))).name
    lines = [f"{h} Check: {name} ({model.get('path', '')})", ""]
    ref = report.get("reference")
    if ref:
        accuracy = ref.get("accuracy")
        lines.append(
            f"Reference: {ref.get('description')} ({ref.get('count')} samples"
            + (f", accuracy {fmt_pct(accuracy)}" if accuracy is not None else "")
            + ")."
        )
    lines.append(f"Verdict: **{report.get('verdict')}**.")
    checks = report.get("checks", [])
    compared = [c for c in checks if c.get("outputs")]
    if compared:
        rows = [row for c in compared for row in _output_rows(c)]
        lines += ["", *_table(_CHECK_COLUMNS, rows)]
    problems = [c for c in checks if c["status"] in ("failed", "error")]
    if problems:
        lines += ["", "Out of tolerance or not runnable:", ""]
        for c in problems:
            why = "; ".join(c.get("failures") or []) or c.get("reason") or "?"
            lines.append(f"- **{c['artifact']}** on {c['backend']}: {why}")
    lines += _worst_lines(checks)
    for artifact, layer in (report.get("per_layer") or {}).items():
        lines += _per_layer_lines(artifact, layer)
    skipped = [c for c in checks if c["status"] in ("skipped", "not_run")]
    if skipped:
        lines += ["", "Skipped (cannot run here):", ""]
        groups: dict[tuple[str, str], list[str]] = {}
        for c in skipped:
            groups.setdefault((c["backend"], str(c.get("reason"))), []).append(c["artifact"])
        lines += [
            f"- {', '.join(names)} on {backend}: {reason}"
            for (backend, reason), names in groups.items()
        ]
    if report.get("warnings"):
        lines += ["", "Warnings:", ""] + [f"- {w}" for w in report["warnings"]]
    return "\n".join(lines) + "\n"


_CHECK_COLUMNS = (
    "artifact",
    "backend",
    "status",
    "output",
    "kind",
    "max abs",
    "p99 abs",
    "cosine",
    "mismatched",
    "top-1 agr.",
    "top-5 agr.",
    "accuracy",
    "tolerance",
)


def _output_rows(check: dict[str, Any]) -> list[list[str]]:
    """One table row per output of one run."""
    status = check["status"].upper() if check["status"] in ("failed", "error") else check["status"]
    rows = []
    for out in check["outputs"]:
        c = out["comparison"]
        logits = out["kind"] == "logits"
        total = c.get("total_elements") or 0
        mismatched = c.get("mismatched_elements", 0) / total if total else None
        rows.append(
            [
                check["artifact"],
                check["backend"],
                status + (" ✗" if out["failures"] else ""),
                f"`{out['name']}`",
                out["kind"],
                fmt_g(c.get("max_abs")),
                fmt_g(c.get("p99_abs")),
                f"{c['cosine_min']:.6f}" if c.get("cosine_min") is not None else "-",
                fmt_pct(mismatched),
                fmt_pct(c.get("top1_agreement")) if logits else "-",
                fmt_pct(c.get("top5_agreement")) if logits else "-",
                fmt_pct(c.get("accuracy_candidate")) if logits else "-",
                out["tolerance"].get("description", "-"),
            ]
        )
    return rows


def _worst_lines(checks: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            c["artifact"],
            c["backend"],
            f"`{out['name']}`",
            str(w["index"]),
            str(w.get("label", "-")),
            str(w["reference_class"]),
            str(w["candidate_class"]),
            fmt_g(w["max_abs"]),
        ]
        for c in checks
        for out in c.get("outputs") or []
        for w in out.get("worst") or []
        if not w.get("agree", True)
    ]
    if not rows:
        return []
    header = ["artifact", "backend", "output", "sample", "label", "reference", "candidate"]
    return ["", "Worst disagreeing samples:", "", *_table([*header, "max abs"], rows)]


def _per_layer_lines(artifact: str, layer: dict[str, Any]) -> list[str]:
    if "error" in layer:
        return ["", f"Per-layer, {artifact}: not available ({layer['error']})"]
    lines = [
        "",
        f"Per-layer, {artifact} vs {layer['reference']} ({layer['samples']} samples): "
        f"{layer['summary']}",
        "",
    ]
    return lines + _table(
        ["tensor", "op", "rel L2", "added", "max abs", "cosine", "via"],
        [
            [
                f"`{x['name']}`" + (" ◀" if x["name"] == layer["first_mismatch"] else ""),
                x["op_type"],
                fmt_g(x["rel_l2"]),
                fmt_g(x["added_error"]),
                fmt_g(x["max_abs"]),
                f"{x['cosine']:.5f}",
                x["via"],
            ]
            for x in _interesting_layers(layer)
        ],
    )


def _interesting_layers(layer: dict[str, Any], limit: int = 40) -> list[dict[str, Any]]:
    """All layers of a small model; for a large one the first ``limit`` around the mismatch."""
    layers = layer.get("layers", [])
    if len(layers) <= limit:
        return layers
    names = [x["name"] for x in layers]
    start = names.index(layer["first_mismatch"]) if layer.get("first_mismatch") in names else 0
    begin = max(0, start - 5)
    return layers[begin : begin + limit]


def write_check(
    report: dict[str, Any],
    *,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
) -> list[Path]:
    """Write a ``CheckReport.to_dict()`` as JSON and/or Markdown; returns the paths written."""
    written = []
    if json_path:
        written.append(atomic_write_json(json_path, report))
    if markdown_path:
        written.append(atomic_write_text(markdown_path, check_markdown(report)))
    return written
