"""Shared steps of the benchmark matrices (``run_matrix.py`` on CPU, ``gpu/gpu_matrix.py``).

Train a model of the standard matrix on the embedded digits (resized, 3 channels), export it,
check it and benchmark it, reusing finished runs and bundles when asked. Only the
``edgeport`` Python API is used, exactly as a user would.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("edgeport.benchmarks")

REPO = Path(__file__).resolve().parents[1]


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when it lies inside it (committed results name no
    folder of the machine they ran on), else as given."""
    resolved = Path(path).resolve()
    return resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else str(path)


@dataclass(frozen=True)
class MatrixModel:
    """A model of the standard matrix and how to train it on digits in a few minutes."""

    name: str
    input_size: tuple[int, int]
    epochs: int
    quick_epochs: int
    batch_size: int = 64
    lr: float = 1e-3
    limit: int | None = None  # training images (None: all 1295 of the training split)
    quick_limit: int | None = None  # training images in --quick runs
    model: str | None = None  # what `edgeport train --model` builds (default: name)

    @property
    def shape(self) -> str:
        return f"3x{self.input_size[0]}x{self.input_size[1]}"


STANDARD_MODELS: dict[str, MatrixModel] = {
    # The article's CNN with BatchNorm at 32x32: 8 epochs reach ~97% in well under a minute.
    "simple_cnn_bn": MatrixModel("simple_cnn_bn", (32, 32), epochs=8, quick_epochs=2),
    # ResNet-18 at 224x224 from a seeded init (nothing is downloaded, so --freeze-backbone
    # would train a head on random features: 13% after an epoch). Trained end to end: one epoch
    # gave 62% test accuracy (81% train) in 7.5 CPU-minutes; two epochs on 2 quiet cores take
    # about 8 minutes.
    "resnet18": MatrixModel(
        "resnet18", (224, 224), epochs=2, quick_epochs=1, batch_size=32, lr=2e-3, quick_limit=320
    ),
    # torchvision's MobileNetV3-Small through the training path (so the bundle has reference
    # weights for the PyTorch baselines and int8 calibrates on the training data).
    "mobilenet_v3_small": MatrixModel(
        "mobilenet_v3_small",
        (224, 224),
        epochs=1,
        quick_epochs=1,
        batch_size=32,
        lr=2e-3,
        quick_limit=320,
        model="torchvision:mobilenet_v3_small",
    ),
}


@contextmanager
def timed(what: str) -> Iterator[None]:
    """Log the start of a step and how long it took."""
    start = time.perf_counter()
    log.info("%s ...", what)
    try:
        yield
    finally:
        log.info("%s took %.1f s", what, time.perf_counter() - start)


def train_model(
    spec: MatrixModel,
    work: Path,
    *,
    quick: bool,
    reuse: bool,
    device: str = "cpu",
    threads: int | None = None,
    epochs: int | None = None,
) -> Path:
    """Train ``spec`` on digits (3 channels, resized) into ``work/<name>/run``."""
    from edgeport.train.loop import TrainConfig, train

    run_dir = work / spec.name / "run"
    if reuse and (run_dir / "weights.safetensors").is_file():
        log.info("reusing the trained run %s", run_dir)
        return run_dir
    config = TrainConfig(
        model=spec.model or spec.name,
        data="digits",
        out=run_dir,
        epochs=epochs or (spec.quick_epochs if quick else spec.epochs),
        batch_size=spec.batch_size,
        lr=spec.lr,
        seed=0,
        augment=False,
        input_size=spec.input_size,
        in_channels=3,
        limit=spec.quick_limit if quick and spec.quick_limit else spec.limit,
        device=device,
        threads=threads,
        progress=False,
        overwrite=True,
    )
    with timed(f"training {spec.name} {spec.shape} for {config.epochs} epoch(s) on {device}"):
        return Path(train(config))


def resnet18_classifier_onnx(path: Path, *, opt_batch: int, class_names: Sequence[str]) -> Path:
    """torchvision resnet18 (seeded random weights, 10 classes) exported by edgeport's
    ``export_module`` as an fp32 classifier with its card (ImageNet normalisation, 224x224) in
    the ONNX metadata, so the file alone can ``predict`` and be served; copied to ``path``."""
    import shutil
    import tempfile

    import torch
    import torchvision

    from edgeport.export import export_module
    from edgeport.export.settings import ImagePreprocessing
    from edgeport.runtime.bundle import BatchRange

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = export_module(
            torchvision.models.resnet18(num_classes=len(class_names)).eval(),
            torch.randn(1, 3, 224, 224),
            Path(tmp) / "bundle",
            input_names=("input",),
            output_names=("logits",),
            task="classification",
            class_names=tuple(class_names),
            architecture="resnet18",
            image=ImagePreprocessing(
                size=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
            ),
            batch=BatchRange(1, opt_batch, 64),
        )
        (artifact,) = manifest.artifacts
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / "bundle" / artifact.path, path)
    return path


def export_bundle(
    run_dir: Path,
    bundle: Path,
    *,
    precisions: Sequence[str],
    reuse: bool,
    parity_limit: int | None = None,
    tensorrt: bool = False,
) -> Path:
    """Export ``run_dir`` to ``bundle`` (engines only with ``tensorrt``); a failing parity
    gate is kept and marked failed, and an int8 file slower than fp32 is kept and marked
    (``keep_slow_int8``), so the benchmark still runs and measures every precision."""
    from edgeport.export import export
    from edgeport.runtime.bundle import Manifest

    if reuse and (bundle / "manifest.json").is_file():
        have = {a.precision for a in Manifest.load(bundle).artifacts}
        if set(precisions) <= have:
            log.info("reusing the bundle %s", bundle)
            return bundle
    with timed(f"exporting {run_dir.parent.name} ({', '.join(precisions)})"):
        export(
            run_dir,
            bundle,
            precisions=tuple(precisions),
            tensorrt=tensorrt,
            parity_limit=parity_limit,
            allow_parity_failure=True,
            keep_slow_int8=True,
        )
    return bundle


def test_accuracy(run_dir: Path) -> float | None:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    value = metrics.get("test_accuracy")
    return float(value) if isinstance(value, int | float) else None


def int8_accuracy_lost(check_report: dict[str, Any], backend: str) -> float | None:
    """Percentage points of accuracy the int8 artifact lost against PyTorch fp32 (check data)."""
    for c in check_report.get("checks", []):
        if c["artifact"] == "onnx-int8" and c["backend"] == backend and c.get("outputs"):
            drop = c["outputs"][0]["comparison"].get("accuracy_drop")
            return None if drop is None else 100.0 * drop
    return None


# --------------------------------------------------------------------------------------------
# Peers and the machine's peak


BARE_ORT = "bare-onnxruntime"


def bare_ort_plan(bundle: Path, precision: str, threads: int | None) -> Any:
    """A plain ``onnxruntime.InferenceSession`` on the bundle's ONNX artifact of ``precision``
    (ORT's default options, ``threads`` intra-op threads), timed like every other row."""
    from edgeport.runtime.bundle import Manifest
    from edgeport.runtime.tools.bench import Plan, Timed

    arts = Manifest.load(bundle).artifacts
    art = next(
        a
        for a in arts
        if a.format == "onnx" and a.precision == precision and a.target in (None, "onnxruntime")
    )

    def open_session() -> Timed:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        session = ort.InferenceSession(
            str(bundle / art.path), options, providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        return Timed(
            backend=BARE_ORT,
            kind="baseline",
            precision=precision,
            device="cpu",
            inputs=art.inputs,
            outputs=art.outputs,
            run=lambda feeds: dict(zip(names, session.run(None, dict(feeds)), strict=True)),
            close=lambda: None,
            artifact=art.name,
            max_batch=art.batch.max,
        )

    return Plan(BARE_ORT, precision, "cpu", open_session, art.name)


BARE_OPENVINO = "openvino-defaults"


def bare_openvino_plan(bundle: Path, threads: int | None) -> Any:
    """OpenVINO as a user calls it: ``Core().compile_model`` on the bundle's fp32 ONNX file
    with OpenVINO's own defaults (latency hint; bf16 inference precision where the CPU has
    it), only the threads set to ``threads``, timed like every other row. Its precision is
    what OpenVINO chose (``INFERENCE_PRECISION_HINT`` read back: bf16 or fp32)."""
    from edgeport.runtime.bundle import Manifest
    from edgeport.runtime.tools.bench import Plan, Timed

    art = next(
        a
        for a in Manifest.load(bundle).artifacts
        if a.format == "onnx" and a.precision == "fp32" and a.target is None
    )

    def open_model() -> Timed:
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        compiled = ov.Core().compile_model(str(bundle / art.path), "CPU", config)
        request = compiled.create_infer_request()
        names = [o.any_name for o in compiled.outputs]
        chose = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

        def run(feeds: Any) -> dict[str, Any]:
            result = request.infer(list(feeds.values()))
            return dict(zip(names, (result[o] for o in compiled.outputs), strict=True))

        return Timed(
            backend=BARE_OPENVINO,
            kind="baseline",
            precision={"bf16": "bf16", "f16": "fp16"}.get(chose, "fp32"),
            device="cpu",
            inputs=art.inputs,
            outputs=art.outputs,
            run=run,
            close=lambda: None,
            artifact=art.name,
            max_batch=art.batch.max,
        )

    return Plan(BARE_OPENVINO, "defaults", "cpu", open_model, art.name)


def cpu_ghz() -> tuple[float | None, str]:
    """The CPU's clock in GHz and where it was read: lscpu's "CPU max MHz", else the highest
    "cpu MHz" of /proc/cpuinfo (the current clock)."""
    import shutil
    import subprocess

    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("CPU max MHz:"):
                return float(line.split(":", 1)[1]) / 1000, "lscpu CPU max MHz"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        mhz = [
            float(line.split(":", 1)[1])
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("cpu MHz")
        ]
        if mhz:
            return max(mhz) / 1000, "/proc/cpuinfo cpu MHz (current clock)"
    return None, "unknown"


def _cpuinfo_field(lines: list[str], key: str) -> str:
    return next((x.split(":", 1)[1].strip() for x in lines if x.split(":")[0].strip() == key), "")


def fp32_lanes() -> tuple[int, str]:
    """fp32 lanes per FMA per cycle, and why: 16 where AVX-512 runs on 512-bit units, else 8.
    AMD before Zen 5 (CPU family < 26: Zen 4 has AVX-512) splits each 512-bit operation into
    two 256-bit halves, so its peak is AVX2's."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    flags = _cpuinfo_field(lines, "flags").split()
    if "avx512f" not in flags:
        return 8, "AVX2"
    family = _cpuinfo_field(lines, "cpu family")
    amd = _cpuinfo_field(lines, "vendor_id") == "AuthenticAMD"
    if amd and family.isdigit() and int(family) < 26:
        return 8, f"AVX-512 on 256-bit units (AMD family {family}, Zen 4 or older)"
    return 16, "AVX-512"


def sgemm_gflops(n: int = 2048, runs: int = 10) -> float:
    """A measured fp32 ceiling: the best of ``runs`` numpy float32 n x n matmuls (its BLAS, on
    every thread it uses), in GFLOP/s. A VM reports its nominal clock, not what the cores boost
    to, so the theoretical peak alone can be exceeded."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b  # warm-up: threads started, pages touched
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def fp32_fma_peak(cores: int) -> dict[str, Any]:
    """This CPU's fp32 peak: cores x 2 FMA units x lanes (:func:`fp32_lanes`) x 2 flop x GHz,
    in GFLOP/s."""
    lanes, isa = fp32_lanes()
    ghz, source = cpu_ghz()
    peak = cores * 2 * lanes * 2 * ghz if ghz else None
    return {
        "cores": cores,
        "fma_units": 2,
        "fp32_lanes": lanes,
        "isa": isa,
        "ghz": ghz,
        "clock_source": source,
        "gflops": peak,
    }
