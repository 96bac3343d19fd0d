"""The one export pipeline behind every front end (a training run, any module, torchvision).

Steps: validate (nothing is written for a bad setting) -> PyTorch reference outputs on the
parity inputs -> in a staging directory: the stored reference, ONNX fp32 (its inputs and
outputs become the card's TensorSpecs) gated against PyTorch, fp16 and int8 derived and gated,
bf16 (the fp32 file run with bf16 arithmetic on OpenVINO) gated where the CPU has bf16,
TensorRT engines built with one profile per input (gated where a GPU can run them), the other
formats asked for (:mod:`edgeport.export.formats`: OpenVINO IR, ExecuTorch, LiteRT; each gated
on its own runtime) -> the manifest -> swap the staging directory into place. Any failure before
the swap leaves the destination as it was; a converter that fails on the model is recorded per
artifact in ``manifest.export["formats"]`` and the rest is written, unless that format was the
only one asked for.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeport.export.bundle_writer import BundleWriter
from edgeport.export.dims import (
    Axes,
    check_example,
    dim_ranges,
    dynamic_axes,
    input_ranges,
    tracing_example,
)
from edgeport.export.formats import export_formats, preflight_formats
from edgeport.export.onnx import tool_versions
from edgeport.export.parity import ReferenceSet
from edgeport.export.samples import Batch, count
from edgeport.export.settings import ExportSettings
from edgeport.runtime.bundle import Artifact, EngineInfo, Manifest
from edgeport.runtime.card import ModelCard
from edgeport.runtime.compare import Verdict
from edgeport.runtime.errors import ConfigError, ParityError
from edgeport.runtime.io import atomic_write_bytes, sha256_file
from edgeport.runtime.reference import REFERENCE_DIR, npy_bytes, npz_bytes
from edgeport.runtime.specs import DimRange, TensorSpec

if TYPE_CHECKING:
    import onnx
    import torch

log = logging.getLogger(__name__)

WORK_DIR = ".work"  # staging-only files, removed before the bundle is committed
FP16_PROBE_SAMPLES = 16  # parity samples that find the tensors too large for fp16


@dataclass
class ExportJob:
    """What one export works on besides its settings: the module, its example inputs (traced
    by torch.export, in input order), the parity inputs (with labels for a classifier), the
    card without inputs/outputs (the pipeline adds them), calibration batches, where it all
    came from (``manifest.export["source"]``) and, for a training run, its weights file. An
    ONNX-in export has ``onnx_model`` instead of a module: its outputs are the reference."""

    module: torch.nn.Module | None
    example: Batch
    parity: Batch
    card: ModelCard
    labels: np.ndarray | None = None
    dataset: str | None = None
    split: str | None = None
    calibration: list[Batch] | None = None
    calibration_source: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    weights: Path | None = None
    onnx_model: onnx.ModelProto | None = None  # ONNX in: the source file, instead of a module


def preflight(
    job: ExportJob, settings: ExportSettings, axes: Axes, ranges: dict[str, DimRange]
) -> None:
    """Refuse what would fail later: int8 without data or its recipe's packages, formats
    without their converters, engines without TensorRT or ranges."""
    preflight_formats(settings)
    if "int8" in settings.precisions:
        if not job.calibration:
            raise ConfigError(
                "int8 needs calibration data: pass calibration= (an .npz path with one array "
                "per input, or an iterable of input dicts; CLI: --calib-data FILE.npz). Random "
                "data would calibrate ranges the real inputs do not have"
            )
        from edgeport.export.int8 import resolve_targets

        resolve_targets(settings.int8_targets, settings.tensorrt)
    if not settings.tensorrt:
        return
    from edgeport.export.tensorrt import import_tensorrt

    import_tensorrt(settings.tensorrt_flavour)  # fail now, not after the ONNX work
    unbounded = sorted(
        {(n, a, d) for n, dims in axes.items() for a, d in dims.items() if d not in ranges}
    )
    if unbounded:
        name, axis, dim = unbounded[0]
        raise ConfigError(
            f"a TensorRT engine needs a range for every dynamic dimension; {dim!r} (input "
            f"{name!r} axis {axis}) has none: pass --shapes {name}:MIN:OPT:MAX or "
            f"shapes={{{name!r}: (min_shape, opt_shape, max_shape)}}"
        )


def run_pipeline(job: ExportJob, settings: ExportSettings, out: str | Path) -> Manifest:
    """Export ``job`` with ``settings`` to a bundle at ``out``; returns its manifest."""
    started = time.perf_counter()
    writer = BundleWriter(out)
    writer.check_destination()
    axes = dynamic_axes(settings, job.example)
    ranges = dim_ranges(settings, axes, job.example)
    trace = job.example if job.module is None else tracing_example(job.example, axes)
    check_example(trace, axes, ranges)
    preflight(job, settings, axes, ranges)
    reference = _reference(job, settings)
    settings = replace(
        settings,
        input_names=tuple(job.example),
        output_names=tuple(reference.outputs),
        dynamic_shapes=axes,
    )
    with writer:
        ex = _Exporter(job, settings, reference, writer.root, ranges)
        ex.timings["reference"] = round(time.perf_counter() - started, 3)
        ex.reference_meta = write_reference(writer.root, reference, job)
        if job.onnx_model is None:
            ex.export_fp32(trace)
        else:
            ex.import_fp32(job.onnx_model)
        if set(settings.formats) & {"onnx", "tensorrt", "openvino"}:
            ex.derive()
        if settings.tensorrt:
            ex.build_engines()
        export_formats(ex, trace)
        shutil.rmtree(writer.root / WORK_DIR, ignore_errors=True)
        manifest = ex.manifest(started)
        manifest.save(writer.root)
        writer.commit()
    log.info(
        "exported %s in %.1f s: %s",
        writer.dest,
        time.perf_counter() - started,
        ", ".join(a.name for a in manifest.artifacts),
    )
    return manifest


def _reference(job: ExportJob, settings: ExportSettings) -> ReferenceSet:
    """The outputs every artifact is judged against: the module's, or the ONNX file's own."""
    if job.onnx_model is not None:
        from edgeport.export.onnx_in import onnx_outputs

        outputs = onnx_outputs(job.onnx_model, job.parity)
        producer = f"ONNX Runtime CPU on the source {job.source.get('file', 'model')}"
    else:
        from edgeport.export.parity import torch_outputs

        if job.module is None:
            raise ConfigError("an export needs a module or an ONNX model")
        outputs = torch_outputs(job.module.eval().to("cpu"), job.parity, settings.output_names)
        producer = "PyTorch fp32"
    return ReferenceSet(job.parity, outputs, job.labels, job.dataset, job.split, producer)


class _Exporter:
    """One export's state: settings, staging root, card, artifacts so far, timings."""

    def __init__(
        self,
        job: ExportJob,
        settings: ExportSettings,
        reference: ReferenceSet,
        root: Path,
        ranges: dict[str, DimRange],
    ) -> None:
        self.job, self.s, self.reference, self.root = job, settings, reference, root
        self.ranges = ranges
        self.card = job.card
        self.kinds: dict[str, str] = {}
        self.artifacts: list[Artifact] = []
        self.onnx_paths: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self.failed: list[str] = []
        self.engine_versions: dict[str, str] = {}
        self.reference_meta: dict[str, Any] = {}
        self.fp32: tuple[str, dict[str, str]] = ("", {})  # the fp32 file and its tools
        self.engine_sources: dict[str, str] = {}  # precision -> the ONNX artifact engines use
        self.int8_left_out: dict[str, dict[str, Any]] = {}
        self.int8_paths: dict[str, Path] = {}  # target -> its chosen int8 file
        # asked for, and per artifact the converters that failed or a format lacks
        self.formats: dict[str, Any] = {"asked": list(settings.formats), "failed": []}

    def timed(self, key: str, start: float) -> None:
        self.timings[key] = round(time.perf_counter() - start, 3)

    def export_fp32(self, trace: Batch) -> None:
        import torch

        from edgeport.export.dims import torch_dynamic_shapes
        from edgeport.export.onnx import save_model, set_metadata, torch_to_onnx

        start = time.perf_counter()
        names = self.s.input_names or ()
        if self.job.module is None:
            raise ConfigError("a PyTorch export needs a module")
        graph = torch_to_onnx(
            self.job.module,
            tuple(torch.from_numpy(np.ascontiguousarray(trace[n])) for n in names),
            input_names=names,
            output_names=self.s.output_names or (),
            dynamic_shapes=torch_dynamic_shapes(self.s.dynamic_shapes or {}, self.ranges, names),
            opset=self.s.opset,
            name=self.card.architecture,
        )
        self.card = self._card(graph.model)
        set_metadata(graph.model, self.card, "fp32")
        ship = "fp32" in self.s.precisions and "onnx" in self.s.formats
        # a bf16 artifact names the fp32 file: it stays in the bundle
        keep = ship or ("bf16" in self.s.precisions and "onnx" in self.s.formats)
        rel = "model.fp32.onnx" if keep else f"{WORK_DIR}/model.fp32.onnx"
        save_model(graph.model, self.root / rel)
        self.timed("onnx-fp32", start)
        tools = {**graph.info.tools, "opset": str(graph.info.opset)}
        self.add_onnx("fp32", rel, tools, ship=ship)
        self.fp32 = (rel, tools)

    def import_fp32(self, model: onnx.ModelProto) -> None:
        """ONNX in: the source file is the fp32 artifact, with the card in its metadata."""
        from edgeport.export.int8.prepare import default_opset
        from edgeport.export.onnx import save_model, set_metadata

        start = time.perf_counter()
        self.card = self._card(model)
        set_metadata(model, self.card, "fp32")
        ship = "fp32" in self.s.precisions and "onnx" in self.s.formats
        rel = "model.fp32.onnx" if ship else f"{WORK_DIR}/model.fp32.onnx"
        save_model(model, self.root / rel)
        self.timed("onnx-fp32", start)
        tools = {
            **tool_versions("onnx"),
            "opset": str(default_opset(model)),
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
        }
        self.add_onnx("fp32", rel, tools, ship=ship)
        self.fp32 = (rel, tools)

    def _card(self, model: onnx.ModelProto) -> ModelCard:
        """The card with the graph's inputs (ranges, value ranges) and outputs."""
        from edgeport.export.onnx import embedding_ranges, graph_specs
        from edgeport.export.parity import output_kinds

        inputs, outputs = graph_specs(model)
        values = {**embedding_ranges(model), **self.s.value_ranges}
        unknown = sorted(set(self.s.value_ranges) - {s.name for s in inputs})
        if unknown:
            raise ConfigError(f"value_ranges names unknown inputs {unknown}")
        inputs = tuple(
            TensorSpec(
                s.name,
                s.dtype,
                s.shape,
                input_ranges(s, self.ranges, self.job.example[s.name]),
                values.get(s.name),
            )
            for s in inputs
        )
        self.kinds = output_kinds(outputs, self.card.task)
        return replace(self.card, inputs=inputs, outputs=outputs)

    def onnx_rel(self, precision: str) -> str:
        """Where the derived ONNX file of ``precision`` goes: the bundle, or the staging-only
        directory when ONNX is not a format asked for (engines and IR are built from it)."""
        name = f"model.{precision}.onnx"
        return name if "onnx" in self.s.formats else f"{WORK_DIR}/{name}"

    def add_onnx(
        self, precision: str, rel: str, tools: dict[str, str], *, ship: bool = True
    ) -> None:
        """Gate the ONNX file at ``rel`` and, when shipped, list it in the manifest."""
        name = f"onnx-{precision}"
        self.onnx_paths[precision] = self.root / rel
        start = time.perf_counter()
        verdict = self.check(name, precision, rel)
        self.timed(f"parity-{name}", start)
        self.gate(verdict)
        if ship:
            source = None if precision == "fp32" else "onnx-fp32"
            self.artifact(name, "onnx", precision, rel, tools, verdict, source=source)

    def add_bf16(self) -> None:
        """The bf16 artifact: the fp32 file (no second copy: same sha256 and size, no bytes
        added to the bundle), made for OpenVINO, which computes it in bf16; gated where this
        CPU has bf16, else listed with why its parity was not run."""
        from edgeport.export.parity import not_run
        from edgeport.runtime.backends.openvino import import_openvino
        from edgeport.runtime.backends.registry import ModelFile, precision_unavailable_reason

        name, (rel, tools) = "onnx-bf16", self.fp32
        path = self.root / rel
        reason = precision_unavailable_reason("openvino", ModelFile("onnx", "bf16", path, name))
        if reason is None:
            start = time.perf_counter()
            verdict = self.check(name, "bf16", rel, backend="openvino")
            self.timed(f"parity-{name}", start)
            self.gate(verdict)
            tools = {**tools, "openvino": str(import_openvino().get_version())}
        else:
            verdict = not_run(name, "bf16", "openvino", reason)
        source = "onnx-fp32" if "fp32" in self.s.precisions else None
        self.artifact(name, "onnx", "bf16", rel, tools, verdict, source=source, target="openvino")

    def check(
        self,
        name: str,
        precision: str,
        rel: str,
        backend: str = "onnxruntime-cpu",
        artifact: Artifact | None = None,
    ) -> Verdict:
        """The parity verdict on the file at ``rel`` run by ``backend`` (opened as ``artifact``
        describes it, when given)."""
        return self.check_file(name, precision, self.root / rel, backend, artifact)

    def check_file(
        self,
        name: str,
        precision: str,
        path: Path,
        backend: str,
        artifact: Artifact | None = None,
    ) -> Verdict:
        """The parity verdict on the file at ``path`` run by ``backend`` (OpenVINO's compiled
        model cache is not written: the file may be a discarded int8 attempt)."""
        from edgeport.export.parity import check_artifact

        return check_artifact(
            name,
            precision,
            path,
            self.reference,
            self.kinds,
            backend=backend,
            class_names=self.card.class_names,
            backend_options={"cache_dir": ""} if backend == "openvino" else None,
            artifact=artifact,
            card=self.card,
        )

    def derive(self) -> None:
        """fp16 and the int8 files from the fp32 graph, and bf16 on the fp32 graph, each gated."""
        from edgeport.export.onnx import convert_fp16

        ship = "onnx" in self.s.formats
        if "fp16" in self.s.precisions:
            start = time.perf_counter()
            samples = {n: a[:FP16_PROBE_SAMPLES] for n, a in self.reference.inputs.items()}
            rel = self.onnx_rel("fp16")
            tools = convert_fp16(
                self.onnx_paths["fp32"], self.root / rel, self.card, samples=samples
            )
            self.timed("onnx-fp16", start)
            self.add_onnx("fp16", rel, tools, ship=ship)
        if "int8" in self.s.precisions:
            self.derive_int8()
        if "bf16" in self.s.precisions and "onnx" in self.s.formats:
            self.add_bf16()

    def derive_int8(self) -> None:
        """One int8 file per target engine, each kept only when it wins (``int8.decide``)."""
        from edgeport.export.int8 import INT8_TARGETS, resolve_targets
        from edgeport.export.int8.decide import Int8Maker
        from edgeport.export.int8.prepare import prepare_fp32

        targets, skipped = resolve_targets(self.s.int8_targets, self.s.tensorrt)
        for target, why in skipped.items():
            log.info("no int8 file for %s: %s", target, why)
            self.int8_left_out[target] = {"decision": "not made", "reason": why}
        work = self.root / WORK_DIR / "int8"
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        prepared = prepare_fp32(self.onnx_paths["fp32"], work / "prepared.onnx")
        self.timed("int8-prepare", start)
        maker = Int8Maker(
            fp32=self.onnx_paths["fp32"],
            prepared=prepared,
            card=self.card,
            calibration=self.job.calibration or [],
            method=self.s.calib.method,
            policy=self.s.int8_policy(),
            inputs=self.reference.inputs,
            judge=lambda name, path, backend: self.check_file(name, "int8", path, backend),
            work=work,
            engine_note={"tensorrt": "TensorRT int8 is timed as an engine, where a GPU runs it"},
        )
        for target in targets:
            start = time.perf_counter()
            outcome = maker.make(INT8_TARGETS[target])
            self.timed(f"int8-{target}", start)
            self.add_int8(outcome)

    def add_int8(self, outcome: Any) -> None:
        """List a target's chosen int8 file (staged only, when ONNX is not a format asked for:
        engines and IR are built from it), or record why it was left out."""
        from edgeport.export.int8.decide import place

        spec, record, chosen = outcome.target, outcome.record(), outcome.chosen
        failed_but_allowed = (
            chosen is not None and chosen.verdict.status == "failed" and self.s.allow_parity_failure
        )
        if chosen is None or not (outcome.kept or failed_but_allowed):
            log.warning("int8 for %s left out: %s", spec.target, outcome.reason)
            self.int8_left_out[spec.target] = record
            return
        verdict = chosen.verdict
        ship = "onnx" in self.s.formats
        rel = spec.filename if ship else f"{WORK_DIR}/{spec.filename}"
        path = self.root / rel
        place(chosen, path)
        self.gate(verdict)
        self.int8_paths[spec.target] = path
        if spec.target == "tensorrt":
            self.onnx_paths["int8"] = path
            if ship:
                self.engine_sources["int8"] = spec.artifact
        if not ship:
            return
        self.artifact(
            spec.artifact,
            "onnx",
            "int8",
            rel,
            chosen.quantized.tools,
            verdict,
            source="onnx-fp32",
            target=spec.target,
            quantization=record,
        )

    def gate(self, verdict: Verdict) -> None:
        """Raise ``ParityError`` for a failed artifact unless failures are allowed."""
        if verdict.status != "failed":
            return
        if not self.s.allow_parity_failure:
            raise ParityError(
                verdict.message()
                + ". The bundle was not written; pass --allow-parity-failure to keep the "
                "artifact marked as failed"
            )
        log.warning("keeping %s (--allow-parity-failure)", verdict.message())
        self.failed.append(verdict.artifact)

    def artifact(
        self,
        name: str,
        fmt: str,
        precision: str,
        rel: str,
        tools: dict[str, str],
        verdict: Verdict,
        engine: EngineInfo | None = None,
        source: str | None = None,
        target: str | None = None,
        quantization: dict[str, Any] | None = None,
    ) -> None:
        art = self.record(
            name,
            fmt,
            precision,
            rel,
            tools,
            engine=engine,
            source=source,
            target=target,
            quantization=quantization,
        )
        self.artifacts.append(replace(art, parity=verdict.to_dict()))

    def record(
        self,
        name: str,
        fmt: str,
        precision: str,
        rel: str,
        tools: dict[str, str],
        **fields: Any,
    ) -> Artifact:
        """The manifest entry of the file at ``rel`` (not yet checked); ``fields`` set the
        others (inputs and outputs default to the card's)."""
        path = self.root / rel
        values: dict[str, Any] = {"inputs": self.card.inputs, "outputs": self.card.outputs}
        values.update(fields)
        return Artifact(
            name=name,
            format=fmt,
            precision=precision,
            path=rel,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            tools=tools,
            **values,
        )

    def build_engines(self) -> None:
        """One TensorRT engine per precision, from that precision's ONNX file."""
        from edgeport.export.dims import engine_profiles
        from edgeport.export.parity import not_run
        from edgeport.export.tensorrt import (
            TIMING_CACHE_NAME,
            build_engine,
            engine_runnable_here,
            flavour_of,
            import_tensorrt,
        )

        trt = import_tensorrt(self.s.tensorrt_flavour)
        flavour = flavour_of(trt)
        profiles = engine_profiles(self.card.inputs)
        runnable: dict[str, bool] = {}
        for precision in self.s.precisions:
            if precision == "bf16":  # a CPU precision: its artifact is OpenVINO's
                log.info("no bf16 TensorRT engine: bf16 artifacts are made for OpenVINO")
                continue
            if precision not in self.onnx_paths:
                log.warning("no TensorRT %s engine: its ONNX file was left out", precision)
                continue
            name, rel = f"tensorrt-{precision}", f"model.{precision}.{flavour}.engine"
            start = time.perf_counter()
            build = build_engine(
                self.onnx_paths[precision],
                self.root / rel,
                profiles=profiles,
                timing_cache=self.root / TIMING_CACHE_NAME,
                workspace_bytes=self.s.workspace_bytes,
                flavour=flavour,
                label=name,
            )
            self.timed(name, start)
            reason = engine_runnable_here(self.root / rel, build.info)
            if reason is None:
                start = time.perf_counter()
                verdict = self.check(name, precision, rel, backend="tensorrt")
                self.timed(f"parity-{name}", start)
                self.gate(verdict)
            else:
                verdict = not_run(name, precision, "tensorrt", reason)
            tools = {flavour: build.info.version}
            source = self.engine_sources.get(precision, f"onnx-{precision}")
            target = "tensorrt" if precision == "int8" else None
            self.artifact(
                name, "tensorrt", precision, rel, tools, verdict, build.info, source, target
            )
            runnable[precision] = reason is None
        self.engine_versions = {flavour: str(trt.__version__)}
        if runnable.get("int8") and runnable.get("fp32"):
            self.judge_int8_engine()

    def judge_int8_engine(self) -> None:
        """Where a GPU runs the engines: time the int8 engine against the fp32 one and keep it
        only when it wins (or, with ``keep_slow_int8``, marked)."""
        from edgeport.export.int8.decide import time_against_fp32

        policy = self.s.int8_policy()
        engines = {a.precision: a for a in self.artifacts if a.format == "tensorrt"}
        int8, fp32 = engines["int8"], engines["fp32"]
        timing = time_against_fp32(
            "tensorrt",
            self.root / fp32.path,
            self.root / int8.path,
            self.reference.inputs,
            1,
            policy,
        )
        wins = timing.speedup >= policy.min_speedup
        decision = "kept" if wins else ("kept-slow" if policy.keep_slow else "left-out")
        record = {
            "target": "tensorrt",
            "speedup": round(timing.speedup, 3),
            "timing": timing.to_dict(),
            "decision": decision,
            "reason": f"{timing.speedup:.2f}x the fp32 engine (needs {policy.min_speedup:g}x)",
        }
        if decision == "left-out":
            log.warning("int8 engine left out: %s", record["reason"])
            self.artifacts.remove(int8)
            (self.root / int8.path).unlink()
            self.int8_left_out["tensorrt-engine"] = record
        else:
            self.artifacts[self.artifacts.index(int8)] = replace(int8, quantization=record)

    def manifest(self, started: float) -> Manifest:
        self.timings["total"] = round(time.perf_counter() - started, 3)
        job = self.job
        export = {
            **self.s.to_dict(),
            "source": job.source,
            "parity": {"count": self.reference.count, "dataset": job.dataset, "split": job.split},
            "failed_parity": self.failed,
            "formats": self.formats,
            "timings": self.timings,
        }
        if self.int8_left_out:
            export["int8_left_out"] = self.int8_left_out
        if job.calibration and "int8" in self.s.precisions:
            calibrated = sum(count(b) for b in job.calibration)
            export["calibration"] = {"source": job.calibration_source, "count": calibrated}
        return Manifest(
            card=self.card,
            artifacts=tuple(self.artifacts),
            export=export,
            reference=self.reference_meta,
            versions=_versions(self.engine_versions),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )


def write_reference(root: Path, reference: ReferenceSet, job: ExportJob) -> dict[str, Any]:
    """``reference/inputs.npz`` and ``outputs.npz`` (arrays by name, sample axis first), the
    labels of a classifier and a training run's weights; returns ``manifest.reference``."""
    (root / REFERENCE_DIR).mkdir()
    files = {"inputs": f"{REFERENCE_DIR}/inputs.npz", "outputs": f"{REFERENCE_DIR}/outputs.npz"}
    atomic_write_bytes(root / files["inputs"], npz_bytes(reference.inputs))
    atomic_write_bytes(root / files["outputs"], npz_bytes(reference.outputs))
    meta: dict[str, Any] = {}
    if reference.labels is not None and job.card.task == "classification":
        files["labels"] = f"{REFERENCE_DIR}/labels.npy"
        atomic_write_bytes(root / files["labels"], npy_bytes(reference.labels))
        meta["accuracy"] = reference.accuracy
    if job.weights is not None:
        files["weights"] = f"{REFERENCE_DIR}/weights.safetensors"
        shutil.copyfile(job.weights, root / files["weights"])
    return {
        **files,
        "sha256": {rel: sha256_file(root / rel) for rel in files.values()},
        "dataset": reference.dataset,
        "split": reference.split,
        "count": reference.count,
        **meta,
    }


def _versions(extra: dict[str, str]) -> dict[str, str]:
    versions = tool_versions(
        "edgeport-export",
        "edgeport-runtime",
        "edgeport-train",
        "torch",
        "torchvision",
        "onnx",
        "onnxscript",
        "onnxslim",
        "onnxconverter-common",
        "onnxruntime",
        "numpy",
    )
    versions.update(extra)
    versions["python"] = platform.python_version()
    return versions
