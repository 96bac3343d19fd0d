"""``export()``: a training run directory to a parity-checked bundle.

Steps: validate every setting (nothing is written for a bad one) -> load the checkpoint ->
pick held-out test images and compute the PyTorch reference -> in a staging directory, export
ONNX fp32 and gate it, derive fp16 and int8 and gate each, build TensorRT engines from the ONNX
artifacts (gated where a GPU can run them) -> write the manifest -> swap the staging directory
into place. Any failure before the swap leaves the destination as it was.
"""

from __future__ import annotations

import io
import logging
import platform
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.export.bundle_writer import BundleWriter
from edgeport.export.onnx import check_opset, tool_versions
from edgeport.export.parity import ParityResult, ReferenceSet
from edgeport.export.quantize import CalibrationConfig
from edgeport.runtime.bundle import (
    PRECISIONS,
    Artifact,
    BatchRange,
    EngineInfo,
    Manifest,
    classifier_specs,
)
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, ParityError
from edgeport.runtime.io import atomic_write_bytes, sha256_file

log = logging.getLogger(__name__)

REFERENCE_DIR = "reference"
WORK_DIR = ".work"  # staging-only files, removed before the bundle is committed
SAMPLE_SEED = 0


@dataclass(frozen=True)
class ExportSettings:
    """The validated arguments of ``export``; saved in ``manifest.export``."""

    run_dir: Path
    out: Path
    precisions: tuple[str, ...]
    tensorrt: bool
    batch: BatchRange
    opset: int
    calib: CalibrationConfig
    data_root: str | None
    parity_limit: int | None
    allow_parity_failure: bool
    workspace_bytes: int
    tensorrt_flavour: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "precisions": list(self.precisions),
            "tensorrt": self.tensorrt,
            "batch": str(self.batch),
            "opset": self.opset,
            "calibration": asdict(self.calib),
            "data_root": self.data_root,
            "parity_limit": self.parity_limit,
            "allow_parity_failure": self.allow_parity_failure,
            "workspace_bytes": self.workspace_bytes,
            "tensorrt_flavour": self.tensorrt_flavour,
        }


def parse_precisions(value: str | Iterable[str]) -> tuple[str, ...]:
    """``"fp32,int8"`` or an iterable to a de-duplicated tuple in canonical order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    unknown = [n for n in names if n not in PRECISIONS]
    if unknown or not names:
        raise ConfigError(
            f"unknown precision {', '.join(map(repr, unknown)) if unknown else '(none given)'}; "
            f"choose from {', '.join(PRECISIONS)} (comma-separated, e.g. fp32,int8)"
        )
    return tuple(p for p in PRECISIONS if p in names)


def _batch(value: BatchRange | str) -> BatchRange:
    if isinstance(value, BatchRange):
        return value
    if isinstance(value, str):
        return BatchRange.parse(value)
    raise ConfigError(f"batch must be a BatchRange or 'MIN:OPT:MAX', got {value!r}")


def _settings(
    run_dir: str | Path,
    out: str | Path,
    *,
    precisions: str | Sequence[str],
    tensorrt: bool,
    batch: BatchRange | str,
    opset: int | None,
    calib: CalibrationConfig,
    data_root: str | Path | None,
    parity_limit: int | None,
    allow_parity_failure: bool,
    workspace_bytes: int,
    tensorrt_flavour: str | None,
) -> ExportSettings:
    if not isinstance(calib, CalibrationConfig):
        raise ConfigError(f"calib must be a CalibrationConfig, got {type(calib).__name__}")
    if parity_limit is not None and (not isinstance(parity_limit, int) or parity_limit < 1):
        raise ConfigError(f"parity limit must be a positive number of images, got {parity_limit!r}")
    if workspace_bytes < 1 << 20:
        raise ConfigError(f"TensorRT workspace must be at least 1 MiB, got {workspace_bytes} bytes")
    settings = ExportSettings(
        run_dir=Path(run_dir).expanduser().absolute(),
        out=Path(out).expanduser().absolute(),
        precisions=parse_precisions(precisions),
        tensorrt=bool(tensorrt),
        batch=_batch(batch),
        opset=check_opset(opset),
        calib=calib,
        data_root=str(data_root) if data_root is not None else None,
        parity_limit=parity_limit,
        allow_parity_failure=bool(allow_parity_failure),
        workspace_bytes=int(workspace_bytes),
        tensorrt_flavour=tensorrt_flavour,
    )
    if settings.out == settings.run_dir or settings.run_dir in settings.out.parents:
        raise ConfigError(
            f"--out {settings.out} is inside the run directory {settings.run_dir}; put the bundle "
            "elsewhere"
        )
    return settings


def _sample(
    dataset: str,
    card: ModelCard,
    split: str,
    size: int | None,
    data_root: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed images and labels of ``size`` images spread over the split (seeded)."""
    from edgeport.runtime.preprocess import normalize
    from edgeport.train.data import check_classes, load_split

    raw = load_split(dataset, split, data_root=data_root, download=False)
    check_classes(card, raw.class_names, dataset)
    total = len(raw)
    if size is None or size >= total:
        indices = np.arange(total)
    else:  # a seeded spread, not the first N: a folder dataset is sorted by class
        rng = np.random.default_rng(SAMPLE_SEED)
        indices = np.sort(rng.choice(total, size=size, replace=False))
    images = normalize(raw.prepared(card, [int(i) for i in indices]), card)
    return images, raw.labels[indices].astype(np.int64)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_reference(root: Path, run_dir: Path, reference: ReferenceSet) -> dict[str, Any]:
    from edgeport.train.checkpoint import WEIGHTS_FILE

    files = {
        "weights": f"{REFERENCE_DIR}/weights.safetensors",
        "inputs": f"{REFERENCE_DIR}/inputs.npy",
        "labels": f"{REFERENCE_DIR}/labels.npy",
        "logits": f"{REFERENCE_DIR}/logits.npy",
    }
    (root / REFERENCE_DIR).mkdir()
    shutil.copyfile(run_dir / WEIGHTS_FILE, root / files["weights"])  # the weights just loaded
    atomic_write_bytes(root / files["inputs"], _npy_bytes(reference.inputs))
    atomic_write_bytes(root / files["labels"], _npy_bytes(reference.labels))
    atomic_write_bytes(root / files["logits"], _npy_bytes(reference.logits))
    return {
        **files,
        "dataset": reference.dataset,
        "split": reference.split,
        "count": reference.count,
        "accuracy": reference.accuracy,
        "sha256": {rel: sha256_file(root / rel) for rel in files.values()},
    }


class _Exporter:
    """One export's state: settings, staging root, artifacts so far, timings."""

    def __init__(self, settings: ExportSettings, card: ModelCard, root: Path) -> None:
        self.s = settings
        self.card = card
        self.root = root
        self.artifacts: list[Artifact] = []
        self.onnx_paths: dict[str, Path] = {}
        self.timings: dict[str, float] = {}
        self.failed: list[str] = []

    def artifact(
        self,
        name: str,
        fmt: str,
        precision: str,
        rel: str,
        tools: dict[str, str],
        parity: ParityResult | None,
        engine: EngineInfo | None = None,
        source: str | None = None,
    ) -> Artifact:
        path = self.root / rel
        inputs, outputs = classifier_specs(
            self.card.input_shape, self.card.num_classes, self.s.batch
        )
        art = Artifact(
            name=name,
            format=fmt,
            precision=precision,
            path=rel,
            sha256=sha256_file(path),
            size_bytes=path.stat().st_size,
            inputs=inputs,
            outputs=outputs,
            tools=tools,
            parity=parity.to_dict() if parity else None,
            engine=engine,
            source=source,
        )
        self.artifacts.append(art)
        return art

    def add_onnx(
        self,
        precision: str,
        rel: str,
        tools: dict[str, str],
        reference: ReferenceSet,
        *,
        ship: bool = True,
    ) -> None:
        """Gate the ONNX file at ``rel`` and, when shipped, list it in the manifest."""
        from edgeport.export.parity import check_artifact

        name = f"onnx-{precision}"
        self.onnx_paths[precision] = self.root / rel
        t0 = time.perf_counter()
        result = check_artifact(name, precision, self.root / rel, reference, self.s.batch)
        self.timed(f"parity-{name}", t0)
        self.gate(result)
        if ship:
            source = None if precision == "fp32" else "onnx-fp32"
            self.artifact(name, "onnx", precision, rel, tools, result, source=source)

    def gate(self, result: ParityResult) -> None:
        """Raise ``ParityError`` for a failed artifact unless failures are allowed."""
        if result.passed is False:
            if not self.s.allow_parity_failure:
                raise ParityError(
                    result.message()
                    + ". The bundle was not written; pass --allow-parity-failure to keep the "
                    "artifact marked as failed"
                )
            log.warning("keeping %s (--allow-parity-failure)", result.message())
            self.failed.append(result.artifact)

    def timed(self, key: str, start: float) -> None:
        self.timings[key] = round(time.perf_counter() - start, 3)


def export(
    run_dir: str | Path,
    out: str | Path,
    *,
    precisions: str | Sequence[str] = ("fp32",),
    tensorrt: bool = False,
    batch: BatchRange | str = BatchRange(1, 8, 32),  # noqa: B008 - frozen dataclass
    opset: int | None = None,
    calib: CalibrationConfig = CalibrationConfig(),  # noqa: B008 - frozen dataclass
    data_root: str | Path | None = None,
    parity_limit: int | None = None,
    allow_parity_failure: bool = False,
    workspace_bytes: int = 1 << 30,
    tensorrt_flavour: str | None = None,
) -> Manifest:
    """Export the run in ``run_dir`` to a bundle at ``out`` and return its manifest.

    Raises ``ConfigError`` for bad settings, ``ModelLoadError`` for a missing or broken run,
    ``DatasetError`` for missing data, ``ExportError`` when a step fails and ``ParityError``
    when an artifact misses its tolerance (unless ``allow_parity_failure``). In every such case
    ``out`` is left as it was.
    """
    from edgeport.export.onnx import convert_fp16, export_onnx
    from edgeport.export.parity import make_reference
    from edgeport.export.quantize import quantize_int8
    from edgeport.train.checkpoint import load_checkpoint

    started = time.perf_counter()
    s = _settings(
        run_dir,
        out,
        precisions=precisions,
        tensorrt=tensorrt,
        batch=batch,
        opset=opset,
        calib=calib,
        data_root=data_root,
        parity_limit=parity_limit,
        allow_parity_failure=allow_parity_failure,
        workspace_bytes=workspace_bytes,
        tensorrt_flavour=tensorrt_flavour,
    )
    writer = BundleWriter(s.out)
    writer.check_destination()
    if s.tensorrt:
        from edgeport.export.tensorrt import import_tensorrt

        import_tensorrt(s.tensorrt_flavour)  # fail now, not after the ONNX work
    checkpoint = load_checkpoint(s.run_dir)
    card = checkpoint.card
    dataset = checkpoint.dataset or s.calib.dataset
    if dataset is None:
        raise ConfigError(
            f"run {s.run_dir} does not record its dataset (config.json 'data'); pass "
            "--calib-data NAME to name the dataset to check parity and calibrate on"
        )
    root_data = s.data_root or checkpoint.data_root
    calib_data = s.calib.dataset or dataset

    t0 = time.perf_counter()
    inputs, labels = _sample(dataset, card, "test", s.parity_limit, root_data)
    reference = make_reference(checkpoint.model, inputs, labels, dataset, "test")
    log.info(
        "reference: %d %s test images, PyTorch accuracy %.2f%%",
        reference.count,
        dataset,
        100 * reference.accuracy,
    )
    reference_time = time.perf_counter() - t0

    with writer:
        ex = _Exporter(s, card, writer.root)
        ex.timings["reference"] = round(reference_time, 3)
        reference_meta = _write_reference(writer.root, s.run_dir, reference)

        t0 = time.perf_counter()
        fp32_rel = "model.fp32.onnx"
        if "fp32" not in s.precisions:
            fp32_rel = f"{WORK_DIR}/model.fp32.onnx"  # the source of fp16/int8, not shipped
        info = export_onnx(
            checkpoint.model, card, writer.root / fp32_rel, batch=s.batch, opset=s.opset
        )
        fp32_tools = {**info.tools, "opset": str(info.opset)}
        ex.timed("onnx-fp32", t0)
        ex.add_onnx("fp32", fp32_rel, fp32_tools, reference, ship="fp32" in s.precisions)

        if "fp16" in s.precisions:
            t0 = time.perf_counter()
            tools = convert_fp16(ex.onnx_paths["fp32"], writer.root / "model.fp16.onnx", card)
            ex.timed("onnx-fp16", t0)
            ex.add_onnx("fp16", "model.fp16.onnx", tools, reference)

        calib_count = 0
        if "int8" in s.precisions:
            t0 = time.perf_counter()
            calib_images, _ = _sample(calib_data, card, "train", s.calib.size, root_data)
            calib_count = len(calib_images)
            tools = quantize_int8(
                ex.onnx_paths["fp32"],
                writer.root / "model.int8.onnx",
                card,
                calib_images,
                method=s.calib.method,
            )
            ex.timed("onnx-int8", t0)
            ex.add_onnx("int8", "model.int8.onnx", tools, reference)

        trt_version: dict[str, str] = {}
        if s.tensorrt:
            trt_version = _build_engines(ex, reference)

        shutil.rmtree(writer.root / WORK_DIR, ignore_errors=True)
        ex.timings["total"] = round(time.perf_counter() - started, 3)
        settings = s.to_dict()
        settings.update(
            dataset=dataset,
            calibration={
                **settings["calibration"],
                "dataset": calib_data,
                "split": "train",
                "count": calib_count,
            },
            parity={"dataset": dataset, "split": "test", "count": reference.count},
            failed_parity=ex.failed,
            timings=ex.timings,
            source_metrics={k: v for k, v in checkpoint.metrics.items() if k == "test_accuracy"},
        )
        manifest = Manifest(
            card=card,
            artifacts=tuple(ex.artifacts),
            export=settings,
            reference=reference_meta,
            versions=_versions(trt_version),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        manifest.save(writer.root)
        writer.commit()
    log.info(
        "exported %s in %.1f s: %s",
        s.out,
        time.perf_counter() - started,
        ", ".join(a.name for a in manifest.artifacts),
    )
    return manifest


def _build_engines(ex: _Exporter, reference: ReferenceSet) -> dict[str, str]:
    from edgeport.export.parity import check_artifact, not_run
    from edgeport.export.tensorrt import (
        TIMING_CACHE_NAME,
        build_engine,
        engine_runnable_here,
        flavour_of,
        import_tensorrt,
    )

    trt = import_tensorrt(ex.s.tensorrt_flavour)
    flavour = flavour_of(trt)
    for precision in ex.s.precisions:
        name = f"tensorrt-{precision}"
        rel = f"model.{precision}.{flavour}.engine"
        t0 = time.perf_counter()
        build = build_engine(
            ex.onnx_paths[precision],
            ex.root / rel,
            batch=ex.s.batch,
            timing_cache=ex.root / TIMING_CACHE_NAME,
            workspace_bytes=ex.s.workspace_bytes,
            flavour=flavour,
            label=name,
        )
        ex.timed(name, t0)
        reason = engine_runnable_here(ex.root / rel, build.info)
        if reason is None:
            t0 = time.perf_counter()
            result = check_artifact(
                name, precision, ex.root / rel, reference, ex.s.batch, backend="tensorrt"
            )
            ex.timed(f"parity-{name}", t0)
            ex.gate(result)
        else:
            result = not_run(name, precision, reason, reference.dataset)
        ex.artifact(
            name,
            "tensorrt",
            precision,
            rel,
            {flavour: build.info.version},
            result,
            engine=build.info,
            source=f"onnx-{precision}",
        )
    return {flavour: str(trt.__version__)}


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
