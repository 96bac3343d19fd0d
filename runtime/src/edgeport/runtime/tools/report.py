"""Writing benchmark and check results: JSON (versioned schema), CSV, Markdown and a PNG plot.

Every file is written atomically. matplotlib is not a runtime dependency: :func:`write_plot`
imports it only when called and raises ``BackendUnavailable`` when it is missing.

The benchmark JSON (``schema: "edgeport.bench"``, ``schema_version: 3``) is described field by
field in ``BENCH_JSON_FIELDS`` below and, for each row, in the bench's own field table
(``bench_result.ROW_FIELDS``, which also makes the CSV columns); :func:`validate_bench_dict`
checks a loaded document against them (the README's tables are generated from the same lists).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeport.runtime.errors import BackendUnavailable, InputError
from edgeport.runtime.io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    write_report,
)
from edgeport.runtime.tools.bench_result import (
    CSV_COLUMNS,
    CUDA_GRAPH,
    RESULT_SCHEMA,
    RESULT_SCHEMA_VERSION,
    ROW_FIELDS,
    BenchResult,
    BenchRow,
    ProfiledRow,
    auto_label,
    csv_cells,
    shapes_text,
)
from edgeport.runtime.tools.formatting import (
    fmt_g,
    fmt_ms,
    fmt_pct,
    fmt_rate,
    fmt_ratio,
    markdown_table,
)
from edgeport.runtime.tools.model_record import MODEL_RECORD_FIELDS

# (field, JSON type(s), meaning): the documented schema of a benchmark result.
BENCH_JSON_FIELDS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("schema", ("string",), 'always "edgeport.bench"'),
    (
        "schema_version",
        ("integer",),
        "3; bumped on any incompatible change (3: the auto row; 2: any model; 1: bundles only)",
    ),
    ("created", ("string",), "UTC time the run ended, ISO 8601"),
    ("model", ("object",), MODEL_RECORD_FIELDS),
    (
        "config",
        ("object",),
        "the settings: scenario, backends, precisions, batches, shapes [{input: [dims]}], "
        "baselines, compile_precisions, threads, cuda_graph, parity, inputs, images, "
        "value_ranges, seed, profile {warmup_runs, runs, top}, warmup_s, duration_s, "
        "iterations, min_iterations, max_iterations, cv_warning; and input_data (what the rows "
        "ran on), extra, speedup",
    ),
    (
        "environment",
        ("object",),
        "machine slug, cpu {model, logical, physical, usable, arch}, "
        "threads, load_average, gpus [{name, driver, memory, compute_capability, bus}], "
        "cuda_driver, os, python, packages {name: version}",
    ),
    ("rows", ("array",), "one object per (backend, precision, device, cuda_graph, shapes); below"),
    (
        "skipped",
        ("array",),
        "[{backend, precision, device, reason, artifact, batch, shapes}]: what could "
        "not be measured here and why",
    ),
    (
        "parity",
        ("object",),
        "reference (what outputs were compared with, or why none); candidates {label: {count, "
        "top1_agreement, max_abs, nonfinite, passed, failures, outputs {name: {kind, max_abs, "
        "cosine_min, tolerance}}}}",
    ),
    (
        "profiles",
        ("array",),
        "per profiled row: backend, precision, device, artifact, batch, shapes, tool, runs, "
        "warmup_runs, run_mean_us, layer_total_us, layers [{name, op, mean_us, share, calls, "
        "provider}] slowest first, ops [{op, layers, mean_us, share}], notes; times are means "
        "per run in microseconds, shares of the summed layer time",
    ),
    (
        "summary",
        ("object",),
        "single_stream: [{backend, chosen_backend, precision, device, cuda_graph, shapes, "
        "p90_ms, speedup_vs_eager}] at batch 1, fastest first; offline: [{backend, "
        "chosen_backend, precision, device, cuda_graph, shapes, batch, samples_per_s}], peak per "
        "candidate and shapes besides the batch axis, highest first",
    ),
    ("warnings", ("array",), "run-level warnings (strings)"),
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
_ORDERED = ("min", "p50", "p90", "p95", "p99", "max")


# --------------------------------------------------------------------------------------------
# Schema


def _type_ok(value: Any, kinds: tuple[str, ...]) -> bool:
    for kind in kinds:
        if kind in ("integer", "number") and isinstance(value, bool):
            continue
        if isinstance(value, _JSON_TYPES[kind]):
            return True
    return False


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (booleans included)."""
    return float(value) if _type_ok(value, ("number",)) else None


def _row_problems(i: int, row: Any) -> list[str]:
    if not isinstance(row, dict):
        return [f"rows[{i}] is not an object"]
    problems = []
    for f in ROW_FIELDS:
        if f.key not in row:
            problems.append(f"rows[{i}] missing {f.key!r}")
        elif not _type_ok(row[f.key], f.types):
            problems.append(f"rows[{i}].{f.key} should be {'/'.join(f.types)}")
    lat = row.get("latency_ms") or {}
    for key in ("count", "mean", "std", "cv", *_ORDERED):
        if not _type_ok(lat.get(key), ("number",)):
            problems.append(f"rows[{i}].latency_ms.{key} should be a number")
    values = [v for k in _ORDERED if (v := _number(lat.get(k))) is not None]
    if len(values) == len(_ORDERED) and values != sorted(values):
        problems.append(f"rows[{i}].latency_ms percentiles are not ordered: {values}")
    return problems


def _profile_problems(i: int, profile: Any) -> list[str]:
    if not isinstance(profile, dict) or not isinstance(profile.get("layers"), list):
        return [f"profiles[{i}] is not an object with a list of layers"]
    layers = profile["layers"]
    shares = [
        s for x in layers if isinstance(x, dict) and (s := _number(x.get("share"))) is not None
    ]
    if len(shares) != len(layers):
        return [f"profiles[{i}].layers need a numeric share each"]
    if shares and not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
        return [f"profiles[{i}] layer shares sum to {sum(shares):.6f}, not 1"]
    return []


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
        problems += _row_problems(i, row)
    for i, profile in enumerate(data.get("profiles") or []):
        problems += _profile_problems(i, profile)
    return problems


def schema_markdown() -> str:
    """The schema as Markdown tables (for the README)."""
    lines = ["| field | type | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | {' or '.join(k)} | {m} |" for n, k, m in BENCH_JSON_FIELDS]
    lines += ["", "Each element of `rows` (the CSV has one line per row):", ""]
    lines += ["| field | type | meaning | CSV columns |", "|---|---|---|---|"]
    lines += [
        f"| `{f.key}` | {' or '.join(f.types)} | {f.doc} | {', '.join(f.columns)} |"
        for f in ROW_FIELDS
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Cells


def _backend_cell(backend: str, cuda_graph: bool) -> str:
    return backend + (" +graph" if cuda_graph and backend != CUDA_GRAPH else "")


# --------------------------------------------------------------------------------------------
# Benchmark results


def bench_csv(result: BenchResult) -> str:
    """One CSV line per row; the columns come from the row field table (``CSV_COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_cells(r) for r in result.rows)
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


def _signature_text(row: BenchRow) -> str:
    """The row's shapes without the batch axis: ``3x32x32`` for one input, else by name."""
    if len(row.shapes) == 1:
        return "x".join(map(str, next(iter(row.shapes.values()))[1:]))
    return " ".join(f"{n}:{'x'.join(map(str, dims))}" for n, dims in row.signature)


def _shows_shapes(result: BenchResult) -> bool:
    """Whether the rows need a shapes column: several inputs or several shapes besides batch."""
    return (
        any(len(r.shapes) > 1 for r in result.rows) or len({r.signature for r in result.rows}) > 1
    )


def _has_speedups(result: BenchResult) -> bool:
    """Whether any row has a speed-up (PyTorch eager ran): else no speed-up columns."""
    return any(r.speedup_vs_eager is not None for r in result.rows)


def _intro(result: BenchResult, title: str | None, level: int) -> list[str]:
    cfg = result.config
    signatures = {_signature_text(r) for r in result.rows}
    shape = f" ({signatures.pop()})" if len(signatures) == 1 and not _shows_shapes(result) else ""
    heading = title or f"Benchmark: {result.model.get('name', '?')}{shape}"
    timing = (
        f"{cfg.get('iterations')} iterations"
        if cfg.get("iterations")
        else f"{cfg.get('duration_s')} s per row"
    )
    text = (
        f"{_env_line(result.environment)}. Threads: {cfg.get('threads') or 'default'}. Warm-up "
        f"{cfg.get('warmup_s')} s, {timing}. Inputs: {cfg.get('input_data')}. Parity: "
        f"{result.parity.get('reference', '-')}."
        + (f" Speed-up = {cfg.get('speedup')}." if _has_speedups(result) else "")
        + f" Created {result.created}."
    )
    return [f"{'#' * level} {heading}", "", text, ""]


def _rowsmarkdown_table(result: BenchResult) -> list[str]:
    shapes = _shows_shapes(result)
    with_stages = any(r.stages for r in result.rows)
    header = ["backend", "precision", "device", *(["shapes"] if shapes else []), "batch"]
    header += ["p50 ms", "p90 ms", "p99 ms", "mean ms", "CV", "samples/s"]
    header += ["H2D ms", "compute ms", "D2H ms"] if with_stages else []
    speedup = _has_speedups(result)
    header += ["speed-up vs eager"] if speedup else []
    header += ["top-1 vs ref", "max abs vs ref"]
    rows = []
    order = sorted(
        result.rows, key=lambda r: (r.device, r.signature, r.batch, r.kind != "baseline", r.backend)
    )
    for r in order:
        lat = r.latency
        backend = r.label if r.chosen_backend else _backend_cell(r.backend, r.cuda_graph)
        cells = [backend, r.precision, r.device]
        cells += [shapes_text(r.shapes)] if shapes else []
        cells += [str(r.batch), fmt_ms(lat.p50), fmt_ms(lat.p90), fmt_ms(lat.p99)]
        cells += [fmt_ms(lat.mean), f"{lat.cv:.1%}" + (" ⚠" if r.warnings else "")]
        cells.append(fmt_rate(r.throughput))
        if with_stages:
            stage = r.stages or {}
            cells += [
                fmt_ms(stage[s].p50) if s in stage else "-" for s in ("h2d", "compute", "d2h")
            ]
        cells += [fmt_ratio(r.speedup_vs_eager)] if speedup else []
        cells += [fmt_pct(r.parity_top1, 1), fmt_g(r.parity_max_abs)]
        rows.append(cells)
    return markdown_table(header, rows)


def _summary_cell(entry: dict[str, Any]) -> str:
    """The backend of a summary entry; the auto row as ``auto (openvino int8)``."""
    if entry.get("chosen_backend"):
        return auto_label(entry["chosen_backend"], entry["precision"])
    return _backend_cell(entry["backend"], entry["cuda_graph"])


def _auto_lines(result: BenchResult) -> list[str]:
    """What auto chose at each batch size, and what decided."""
    choices = {
        (r.batch, r.label): r.choice_basis for r in result.rows if r.chosen_backend is not None
    }
    if not choices:
        return []
    lines = ["", 'auto (`load(backend="auto", expected_batch=batch)`) chose:', ""]
    lines += [f"- batch {batch}: {label}; {basis}" for (batch, label), basis in choices.items()]
    return lines


def _scenario_tables(result: BenchResult) -> list[str]:
    scenario = result.config.get("scenario", "both")
    shapes, speedup = _shows_shapes(result), _has_speedups(result)
    lines: list[str] = []
    single = result.single_stream() if scenario in ("single-stream", "both") else []
    if single:
        lines += ["", "Single-stream (batch 1, p90 latency, fastest first):", ""]
        header = ["backend", "precision", "device", *(["shapes"] if shapes else []), "p90 ms"]
        lines += markdown_table(
            header + (["speed-up vs eager"] if speedup else []),
            [
                [_summary_cell(d), d["precision"], d["device"]]
                + ([shapes_text(d["shapes"])] if shapes else [])
                + [fmt_ms(d["p90_ms"])]
                + ([fmt_ratio(d["speedup_vs_eager"])] if speedup else [])
                for d in single
            ],
        )
    offline = result.offline() if scenario in ("offline", "both") else []
    if offline:
        lines += ["", "Offline (peak throughput over the batch sizes):", ""]
        header = ["backend", "precision", "device", *(["shapes"] if shapes else [])]
        lines += markdown_table(
            [*header, "batch", "samples/s"],
            [
                [_summary_cell(d), d["precision"], d["device"]]
                + ([shapes_text(d["shapes"])] if shapes else [])
                + [str(d["batch"]), fmt_rate(d["samples_per_s"])]
                for d in offline
            ],
        )
    return lines


def _profile_section(p: ProfiledRow, top: int) -> list[str]:
    prof = p.profile
    run = f"mean run {fmt_ms(prof.run_mean_us / 1000)} ms, " if prof.run_mean_us else ""
    lines = [
        "",
        f"**{_backend_cell(p.backend, False)} {p.precision} ({p.device}), "
        f"{shapes_text(p.shapes)}**: {run}layers sum {fmt_ms(prof.layer_total_us / 1000)} ms "
        f"per run ({prof.runs} runs after {prof.warmup_runs} warm-up runs; {len(prof.layers)} "
        "layers).",
        "",
    ]
    shown = prof.layers[:top]
    lines += markdown_table(
        ["layer", "op", "mean us", "share"],
        [[f"`{x.name}`", x.op, f"{x.mean_us:,.1f}", fmt_pct(x.share, 1)] for x in shown],
    )
    if len(prof.layers) > top:
        rest = prof.layers[top:]
        lines.append(
            f"| ({len(rest)} more) | | {sum(x.mean_us for x in rest):,.1f} | "
            f"{fmt_pct(sum(x.share for x in rest), 1)} |"
        )
    lines += [""]
    lines += markdown_table(
        ["op type", "layers", "mean us", "share"],
        [[o.op, str(o.layers), f"{o.mean_us:,.1f}", fmt_pct(o.share, 1)] for o in prof.ops()],
    )
    return lines


def _profiles(result: BenchResult) -> list[str]:
    if not result.profiles:
        return []
    first = result.profiles[0].profile
    notes = "; ".join(dict.fromkeys(n for p in result.profiles for n in p.profile.notes))
    lines = [
        "",
        f"Where the time goes, per layer (profiled in a separate session, not in the rows "
        f"above: {first.tool}{'; ' + notes if notes else ''}):",
    ]
    top = int((result.config.get("profile") or {}).get("top") or 15)
    for p in result.profiles:
        lines += _profile_section(p, top)
    return lines


def _skipped_lines(result: BenchResult) -> list[str]:
    if not result.skipped:
        return []
    lines = ["", "Not measured here:", ""]
    groups: dict[tuple[str, str, str], list[str]] = {}
    for s in result.skipped:
        where = f"batch {s.batch}" if s.batch and not s.shapes else None
        where = shapes_text(s.shapes) if s.shapes else where
        what = " ".join(x for x in (s.precision, where) if x)
        groups.setdefault((s.backend, s.device or "", s.reason), []).append(what)
    for (backend, device, reason), whats in groups.items():
        detail = ", ".join(w for w in dict.fromkeys(whats) if w)
        place = " ".join(x for x in (backend, device and f"on {device}") if x)
        lines.append(f"- {place}{f' ({detail})' if detail else ''}: {reason}")
    return lines


def bench_markdown(result: BenchResult, *, title: str | None = None, level: int = 2) -> str:
    """A readable report: settings, environment, one row per measurement, the two scenarios,
    the per-layer profiles, what was not measured and the warnings."""
    lines = _intro(result, title, level) + _rowsmarkdown_table(result) + _auto_lines(result)
    lines += _scenario_tables(result)
    lines += _profiles(result) + _skipped_lines(result)
    warnings = list(result.warnings) + sorted(
        {f"{r.label} {shapes_text(r.shapes)}: {w}" for r in result.rows for w in r.warnings}
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


def _x_axis(result: BenchResult) -> tuple[dict[Any, float], str, bool]:
    """Where each row goes on the x axis: its batch (log scale) when the rows differ only by
    batch, else the index of its shapes in order of first appearance."""
    if len({r.signature for r in result.rows}) <= 1:
        return {r.batch: float(r.batch) for r in result.rows}, "batch size", True
    keys = list(dict.fromkeys(shapes_text(r.shapes) for r in result.rows))
    return {k: float(i) for i, k in enumerate(keys)}, "input shapes", False


def _plot_result(ax_lat: Any, ax_tp: Any, result: BenchResult) -> None:
    positions, xlabel, by_batch = _x_axis(result)
    series: dict[str, list[BenchRow]] = {}
    for r in result.rows:
        series.setdefault(f"{r.label} ({r.device})", []).append(r)
    for label, rows in sorted(series.items()):
        keys = [r.batch if by_batch else shapes_text(r.shapes) for r in rows]
        order = sorted(range(len(rows)), key=lambda i: positions[keys[i]])
        xs = [positions[keys[i]] for i in order]
        (line,) = ax_lat.plot(xs, [rows[i].latency.p50 for i in order], "o-", label=f"{label} p50")
        color = line.get_color()
        ax_lat.plot(xs, [rows[i].latency.p99 for i in order], "x--", color=color)
        ax_tp.plot(xs, [rows[i].throughput for i in order], "o-", color=color, label=label)
    ticks = sorted(positions.items(), key=lambda kv: kv[1])
    for ax in (ax_lat, ax_tp):
        if by_batch:
            ax.set_xscale("log", base=2)
        ax.set_xticks([v for _, v in ticks], [str(k) for k, _ in ticks], fontsize=7)
        ax.set_xticks([], minor=True)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
    name = result.model.get("name", "?")
    ax_lat.set_ylabel("latency per call (ms)")
    ax_lat.set_title(f"{name}: latency (p50 solid, p99 dashed)")
    ax_tp.set_ylabel("throughput (samples/s)")
    ax_tp.set_title(f"{name}: throughput")
    ax_tp.legend(fontsize=7, loc="best")


def write_plot(
    results: Sequence[BenchResult], path: str | Path, *, title: str | None = None
) -> Path:
    """PNG: per result (one model) a row of two panels: p50 (solid) and p99 (dashed) latency,
    and throughput, against the batch size (or the input shapes when they differ beyond the
    batch); one colour per backend/precision/device."""
    if not results or not any(r.rows for r in results):
        raise InputError("nothing to plot: the benchmark has no measured rows")
    figure_cls, canvas_cls = _matplotlib()
    fig = figure_cls(figsize=(12, 4.2 * len(results)), layout="constrained")
    canvas_cls(fig)
    axes = fig.subplots(len(results), 2, squeeze=False)
    for (ax_lat, ax_tp), result in zip(axes, results, strict=True):
        if result.rows:
            _plot_result(ax_lat, ax_tp, result)
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
    name = model.get("name") or Path(str(model.get("path", "?"))).name
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
        lines += ["", *markdown_table(_CHECK_COLUMNS, rows)]
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
    return ["", "Worst disagreeing samples:", "", *markdown_table([*header, "max abs"], rows)]


def _per_layer_lines(artifact: str, layer: dict[str, Any]) -> list[str]:
    if "error" in layer:
        return ["", f"Per-layer, {artifact}: not available ({layer['error']})"]
    lines = [
        "",
        f"Per-layer, {artifact} vs {layer['reference']} ({layer['samples']} samples): "
        f"{layer['summary']}",
        "",
    ]
    return lines + markdown_table(
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
    return write_report(
        lambda: report,
        lambda: check_markdown(report),
        json_path=json_path,
        markdown_path=markdown_path,
    )
