"""``edgeport inspect PATH``: what a bundle, ONNX file or engine holds, and what can run it here.

Nothing is opened: the report comes from the manifest, the files themselves (ONNX graph inputs
and outputs, sha256), the installed libraries and the GPUs the driver reports. Inputs and
outputs are listed as :class:`~edgeport.runtime.specs.TensorSpec`: dtype, symbolic shape, the
range of every dynamic dimension and declared value ranges (a bundle artifact's as its manifest
declares them, a bare ONNX file's as the graph and its embedded model card say).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgeport.runtime.backends import executorch
from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.backends.onnx_proto import OnnxSummary, read_onnx_summary
from edgeport.runtime.backends.registry import (
    BACKENDS,
    ModelFile,
    candidate_unavailable_reason,
    machine_report,
    plan,
    runs_format,
)
from edgeport.runtime.bundle import artifact_path, verify_artifact
from edgeport.runtime.card import ModelCard
from edgeport.runtime.cpu_features import describe as describe_cpu
from edgeport.runtime.cpu_features import describe_line
from edgeport.runtime.errors import BackendUnavailable, InputError, ModelLoadError
from edgeport.runtime.source import resolve_source
from edgeport.runtime.specs import TensorSpec, merge_specs


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show a model's artifacts, inputs, card, and which backends can run it here",
        description=(
            "Describe a bundle directory, .onnx file or .engine file without running it: "
            "artifacts (precision, size, batch range, parity, sha256), inputs and outputs, the "
            "model card, for each backend whether it can run here and, if not, why, and the "
            "CPU's precision capabilities (bf16, int8 dot products, AMX, fp16)."
        ),
    )
    parser.add_argument("path", metavar="PATH", help="bundle directory, .onnx or .engine file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the sha256 check of the artifacts"
    )
    parser.set_defaults(handler=run_inspect)


def inspect_path(path: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The report ``edgeport inspect`` prints, as a JSON-ready dict."""
    source = resolve_source(path)
    report: dict[str, Any] = {
        "path": str(source.path),
        "kind": source.kind,
        "task": source.card.task if source.card else None,
        "card": source.card.to_dict() if source.card else None,
    }
    if source.manifest is not None:
        report["created"] = source.manifest.created
        report["versions"] = dict(source.manifest.versions)
    report["artifacts"] = [
        _describe_candidate(c, verify, source.summary, source.card) for c in source.candidates
    ]
    report["bad_artifacts"] = [a["name"] for a in report["artifacts"] if a.get("bad")]
    to_open, _ = plan(source.candidates, backend="auto", precision=None, device_kind=None)
    report["auto_choice"] = (
        {
            "backend": to_open[0][0],
            "target": to_open[0][1].label,
            "precision": to_open[0][1].precision,
        }
        if to_open
        else None
    )
    gpus = probe_gpus()
    report["machine"] = {
        "backends": machine_report(),
        "cpu": describe_cpu(),
        "needs": {"executorch": executorch.NEEDS},
        "gpus": [
            {"index": d.index, "name": d.name, "compute_capability": d.compute_capability}
            for d in gpus.devices
        ],
        "gpu_reason": gpus.reason,
        "driver": gpus.driver_version,
    }
    return report


def _spec_dicts(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
    return [{**spec.to_dict(), "text": spec.describe()} for spec in specs]


def _file_specs(
    summary: OnnxSummary, card: ModelCard | None
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """A bare ONNX file's inputs and outputs, with what its embedded card declares."""
    inputs = tuple(TensorSpec(t.name, t.elem_type, t.shape) for t in summary.inputs)
    outputs = tuple(TensorSpec(t.name, t.elem_type, t.shape) for t in summary.outputs)
    where = str(summary.path)
    if card is not None and card.inputs:
        inputs = merge_specs(inputs, card.inputs, where, "inputs")
    if card is not None and card.outputs:
        outputs = merge_specs(outputs, card.outputs, where, "outputs")
    return inputs, outputs


def _describe_candidate(
    cand: ModelFile, verify: bool, summary: OnnxSummary | None, card: ModelCard | None
) -> dict[str, Any]:
    """``summary``: the file already parsed by ``resolve_source`` (a bare .onnx), else None."""
    art = cand.artifact
    info: dict[str, Any] = {
        "name": cand.label,
        "format": cand.format,
        "precision": cand.precision,
        "path": str(cand.path),
    }
    if art is not None and cand.bundle_dir is not None:
        try:  # confined to the bundle (links included), verified or not
            cand = replace(cand, path=artifact_path(cand.bundle_dir, art))
        except ModelLoadError as exc:
            info.update(integrity=f"BAD: {exc}", bad=True, backends={})
            return info
    if art is not None:
        info.update(
            size_bytes=art.size_bytes,
            batch=str(art.batch),
            inputs=_spec_dicts(art.inputs),
            outputs=_spec_dicts(art.outputs),
            parity=_parity_text(art.parity),
            tools=dict(art.tools),
        )
        if art.engine is not None:
            info["engine"] = {
                "flavour": art.engine.flavour,
                "version": art.engine.version,
                "compute_capability": art.engine.compute_capability or "any supported",
                "hardware_compatibility": art.engine.hardware_compatibility,
            }
        info["integrity"] = _integrity(cand, verify)
        info["bad"] = info["integrity"].startswith("BAD")
        if info["bad"]:
            info["backends"] = {}
            return info
    elif cand.path.is_file():
        info["size_bytes"] = cand.path.stat().st_size
    if cand.format == "onnx" and cand.path.is_file():
        info.update(_onnx_details(cand, summary, card))
        info["bad"] = info.get("bad", False) or "problem" in info
    if cand.format == "tensorrt" and cand.path.is_file():
        info["library_verdict"] = _engine_verdict(cand)
    info["backends"] = {
        name: candidate_unavailable_reason(name, cand)
        for name in BACKENDS
        if runs_format(name, cand.format)
    }
    return info


def _onnx_details(
    cand: ModelFile, summary: OnnxSummary | None, card: ModelCard | None
) -> dict[str, Any]:
    """Opsets, producer and external data of an ONNX file; for a bare file (no artifact) also
    its inputs and outputs, with what its card declares."""
    try:
        summary = summary if summary is not None else read_onnx_summary(cand.path)
        specs = _file_specs(summary, card) if cand.artifact is None else None
    except (ModelLoadError, InputError) as exc:
        return {"problem": str(exc)}
    info: dict[str, Any] = {
        "opsets": summary.opsets,
        "producer": summary.producer,
        "external_data": sorted(set(summary.external_data)),
    }
    if specs is not None:
        info["inputs"], info["outputs"] = (_spec_dicts(s) for s in specs)
    return info


def _parity_text(parity: dict[str, Any] | None) -> str:
    if not parity:
        return "not checked"
    if parity.get("passed") is None:  # export could not run it (e.g. an engine without a GPU)
        return f"not run: {parity.get('reason') or 'no reason recorded'}"
    if parity.get("passed"):
        return "passed"
    return "FAILED: " + "; ".join(str(f) for f in parity.get("failures", []))


def _integrity(cand: ModelFile, verify: bool) -> str:
    if cand.bundle_dir is None or cand.artifact is None:
        return "not described by a manifest"
    if not verify:
        return "not checked (--no-verify)"
    try:
        verify_artifact(cand.bundle_dir, cand.artifact)
    except ModelLoadError as exc:
        return f"BAD: {exc}"
    return "sha256 ok"


def _engine_verdict(cand: ModelFile) -> str:
    from edgeport.runtime.backends.tensorrt import check_plan

    try:
        verdict = check_plan(cand.path, cand.engine.flavour if cand.engine else None)
    except (BackendUnavailable, ModelLoadError) as exc:
        return f"not checked: {exc}"
    gpus = probe_gpus()
    if verdict.state == "invalid" and not verdict.problems and gpus.reason:
        return f"{verdict} (no GPU here to run it on: {gpus.reason})"
    return str(verdict)


def run_inspect(args: argparse.Namespace) -> int:
    """Exit 0 when every artifact is whole and readable, 1 when any is bad (named)."""
    report = inspect_path(args.path, verify=not args.no_verify)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    if report["bad_artifacts"]:
        print(f"error: bad artifacts: {', '.join(report['bad_artifacts'])}", file=sys.stderr)
        return 1
    return 0


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_path`'s report."""
    created = f", created {report['created']}" if report.get("created") else ""
    lines = [f"{report['path']} ({report['kind']}{created})", _card_line(report["card"])]
    lines.append("artifacts:")
    for art in report["artifacts"]:
        size = f"{art['size_bytes'] / 1024:.1f} KiB" if "size_bytes" in art else "size ?"
        head = f"  {art['name']}: {art['format']} {art['precision'] or 'precision ?'}, {size}"
        if "batch" in art:
            head += f", batch {art['batch']}, parity {art['parity']}, {art['integrity']}"
        elif "integrity" in art:
            head += f", {art['integrity']}"
        lines.append(head)
        for io in ("inputs", "outputs"):
            lines += [f"      {io[:-1]} {spec['text']}" for spec in art.get(io, [])]
        if "inputs" not in art and art["format"] != "onnx":
            lines.append("      inputs and outputs: read when the file is opened (edgeport run)")
        if "engine" in art:
            e = art["engine"]
            lines.append(
                f"      engine: {e['flavour']} {e['version']}, compute capability "
                f"{e['compute_capability']}, hardware compatibility {e['hardware_compatibility']}"
            )
        if "library_verdict" in art:
            lines.append(f"      library verdict: {art['library_verdict']}")
        if art.get("problem"):
            lines.append(f"      PROBLEM: {art['problem']}")
        for name, reason in art["backends"].items():
            lines.append(f"      {name}: {'can run here' if reason is None else 'no: ' + reason}")
    choice = report["auto_choice"]
    lines.append(
        f"auto would try first: {choice['target']} on {choice['backend']}"
        if choice
        else "auto: nothing here can run this model"
    )
    if choice and choice["target"] in report["bad_artifacts"]:
        lines.append(
            f"  ... and load() refuses it: {choice['target']} is BAD (see above); re-export the "
            "bundle, or ask for another precision"
        )
    machine = report["machine"]
    lines.append(f"cpu precisions: {describe_line(machine['cpu'])}")
    lines.append("backends on this machine:")
    for name, reason in machine["backends"].items():
        needs = machine.get("needs", {}).get(name)
        state = "available" + (f" (needs {needs})" if needs else "")
        lines.append(f"  {name}: {state if reason is None else 'no: ' + reason}")
    if machine["gpus"]:
        for gpu in machine["gpus"]:
            lines.append(
                f"gpu {gpu['index']}: {gpu['name']} (compute capability "
                f"{gpu['compute_capability']}), driver {machine['driver']}"
            )
    else:
        lines.append(f"gpus: none ({machine['gpu_reason']})")
    return "\n".join(lines)


def _card_line(card: dict[str, Any] | None) -> str:
    if not card:
        return "card: none (run works on preprocessed batches; predict needs a card)"
    parts = [f"card: {card['architecture']}"]
    if card["task"] != "classification":
        parts.append(f"task {card['task']}")
    names = card["class_names"]
    if names:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        parts.append(f"{card['num_classes']} classes [{shown}]")
    if card.get("in_channels") is not None:
        c, (h, w) = card["in_channels"], card["input_size"]
        parts.append(
            f"input {c}x{h}x{w} {card['layout']}, mean {card['mean']}, std {card['std']}, "
            f"values {card['value_range']}, {card['interpolation']}"
        )
    return ", ".join(parts)
