"""Which backends exist, which can run here, and in what order ``load`` tries them.

Backends are imported only when asked about (as tinygrad finds devices): asking whether
``tensorrt`` can run imports ``tensorrt`` and nothing else.

Auto-selection (``backend="auto"``) follows this machine's tuning record when one matches
(:mod:`edgeport.runtime.tuning_records`, by ``edgeport tune``); otherwise it tries, fastest first
by rule: ``tensorrt`` (an engine built for this GPU), ``onnxruntime-cuda``, ``onnxruntime-cpu``,
``openvino`` (the CPU engine that wins on larger int8 models; ``tune`` finds when), then the
phone formats' own runtimes, ``litert`` (``.tflite``) and ``executorch`` (``.pte``).
The backends of :data:`BY_NAME_ONLY` are never picked automatically; ask for them by name.
Every candidate that is passed over is recorded as an :class:`Attempt` with the reason, which
``Model.explain()`` prints.

An artifact made for one engine family (``Artifact.target``: an int8 file quantized in the form
OpenVINO fuses, say) is run only by that family's backends (:data:`TARGET_OF`).

Precision (``precision=None``) follows :data:`PRECISION_PREFERENCE`, fastest first for each
backend, and takes the first artifact whose export parity check passed (an fp32 artifact is
also taken when parity was not checked: it is the reference format). Reduced precision that
skipped its parity check is only loaded when asked for by name.

One rule decides what may run, whatever a tuning record or the fixed rule prefers
(:func:`trust_refusal`, and the loader's hash check): an artifact whose export parity check
failed is never run by ``auto``, and an explicit request for it (``precision=``, or the
artifact's own path) is refused unless the caller opts in with ``allow_failed=True``; a file
whose bytes do not match its manifest's sha256 (or that cannot be read as a model) is never run.

On a CPU with bf16 arithmetic (AVX512_BF16 or AMX: :mod:`edgeport.runtime.cpu_features`) and
no GPU in play, the rule (``auto``, or the backend asked for) first tries
:data:`BF16_CPU_FIRST`, what was measured fastest on such CPUs (:func:`bf16_cpu_first`), before
the order above.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.bundle import Artifact, EngineInfo
from edgeport.runtime.cpu_features import cpu_features
from edgeport.runtime.errors import ConfigError

BACKENDS = (
    "tensorrt",
    "onnxruntime-tensorrt",
    "onnxruntime-cuda",
    "onnxruntime-cpu",
    "openvino",
    "litert",
    "executorch",
)
AUTO_ORDER = ("tensorrt", "onnxruntime-cuda", "onnxruntime-cpu", "openvino", "litert", "executorch")
# Backends that run only when asked for by name: never by auto, tune or check's defaults.
BY_NAME_ONLY = {
    "onnxruntime-tensorrt": "it builds a TensorRT engine inside the session on every load "
    "(minutes)",
}
GPU_BACKENDS = frozenset({"tensorrt", "onnxruntime-tensorrt", "onnxruntime-cuda"})
PHONE_BACKENDS = frozenset({"litert", "executorch"})  # the runtimes of phones' own formats
FORMAT_OF = {
    "tensorrt": "tensorrt",
    "onnxruntime-tensorrt": "onnx",
    "onnxruntime-cuda": "onnx",
    "onnxruntime-cpu": "onnx",
    "openvino": "onnx",
    "litert": "litert",
    "executorch": "executorch",
}
# Formats a backend runs besides its FORMAT_OF: OpenVINO compiles its own IR too.
EXTRA_FORMATS = {"openvino": ("openvino",)}
# The engine family whose artifacts each backend runs (``Artifact.target``).
TARGET_OF = {
    "tensorrt": "tensorrt",
    "onnxruntime-tensorrt": "tensorrt",
    "onnxruntime-cuda": "onnxruntime",
    "onnxruntime-cpu": "onnxruntime",
    "openvino": "openvino",
    "litert": "litert",
    "executorch": "executorch",
}
ONNX_BACKENDS = tuple(b for b in BACKENDS if FORMAT_OF[b] == "onnx")
# Fastest first. On GPUs, TensorRT's int8 and fp16 kernels beat fp32. ONNX Runtime's CUDA
# provider runs fp16 on tensor cores but has few int8 (QDQ) kernels, so int8 comes last there.
# On CPUs int8 is only faster for large models (ResNet-18: 17.5 vs 32 ms; the small CNN: 0.18
# vs 0.17 ms on a 2-core AMD EPYC) and fp16 is emulated, so fp32 comes first: ask for int8 by name.
PRECISION_PREFERENCE = {
    "tensorrt": ("int8", "fp16", "fp32"),
    "onnxruntime-tensorrt": ("int8", "fp16", "fp32"),
    "onnxruntime-cuda": ("fp16", "fp32", "int8"),
    "onnxruntime-cpu": ("fp32", "int8", "fp16"),
    "openvino": ("fp32", "int8", "fp16", "bf16"),
    "litert": ("fp32", "int8", "fp16"),
    "executorch": ("fp32", "int8", "fp16"),
}
# On CPUs with bf16 arithmetic, what is fastest there, tried before the order above. Measured
# in interleaved rounds (2 threads, AMD EPYC Zen 4 with AVX512_BF16, no AMX; simple_cnn_bn 32x32,
# resnet18 and mobilenet_v3_small 224x224 trained on digits, batch 1 and 8; the fixed-rule table
# of benchmarks/results/amd-epyc-2c/README.md): against ONNX Runtime fp32 first it gains 1.04x to
# 2.0x on the 224x224 models and loses 2.5x on the small CNN at batch 1, where tune picks ORT.
BF16_CPU_FIRST: tuple[tuple[str, str], ...] = (("openvino", "bf16"),)
PRECISION_RULE = (
    "precision=None takes, for each backend in order, the first artifact in its preference "
    "order whose export parity check passed (fp32 also when unchecked): "
    + "; ".join(
        f"{b}: {' > '.join(p)}" for b, p in PRECISION_PREFERENCE.items() if b not in BY_NAME_ONLY
    )
)


@dataclass(frozen=True)
class ModelFile:
    """One model file that some backend might run."""

    format: str  # one of bundle.FORMATS
    precision: str | None  # None when a bare file does not tell
    path: Path  # where the file is (not yet verified)
    label: str  # the artifact name, or the file name
    artifact: Artifact | None = None
    engine: EngineInfo | None = None
    bundle_dir: Path | None = None  # set when the file is described by a bundle manifest

    @property
    def parity_passed(self) -> bool | None:
        return self.artifact.parity_passed if self.artifact else None

    @property
    def target(self) -> str | None:
        """The engine family the file was made for; None: any that runs its format."""
        return self.artifact.target if self.artifact else None

    @property
    def parity_failures(self) -> list[str]:
        if self.artifact is None or not self.artifact.parity:
            return []
        return [str(f) for f in self.artifact.parity.get("failures", [])]


@dataclass(frozen=True)
class Attempt:
    """What happened to one (backend, candidate) pair during ``load``."""

    backend: str
    target: str  # artifact name / file name; "" when the whole backend was passed over
    precision: str | None
    status: str  # "chosen", "skipped" (decided without opening), "failed" (opening failed)
    reason: str | Callable[[], str | None] = ""  # a callable is asked only when shown

    @property
    def why(self) -> str:
        """The reason, computed now if it was deferred (e.g. to spare an import at load)."""
        return (self.reason() or "") if callable(self.reason) else self.reason

    def __str__(self) -> str:
        what = self.backend
        if self.target:
            what += f" [{self.target}{f', {self.precision}' if self.precision else ''}]"
        why = self.why
        return f"{what}: {self.status}" + (f": {why}" if why else "")


def runs_format(backend: str, fmt: str) -> bool:
    """Whether ``backend`` opens files of the artifact format ``fmt``."""
    return fmt == FORMAT_OF[backend] or fmt in EXTRA_FORMATS.get(backend, ())


def formats_text(backend: str) -> str:
    return " and ".join((FORMAT_OF[backend], *EXTRA_FORMATS.get(backend, ())))


def check_backend_name(backend: str) -> str:
    if backend != "auto" and backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected 'auto' or one of {BACKENDS}")
    return backend


def backend_unavailable_reason(backend: str, device_index: int = 0) -> str | None:
    """Why ``backend`` cannot run on this machine at all, or None (no model is opened)."""
    check_backend_name(backend)
    if backend == "tensorrt":
        from edgeport.runtime.backends.tensorrt import static_unavailable_reason

        return static_unavailable_reason(None, device_index)
    if backend == "openvino":
        from edgeport.runtime.backends import openvino

        return openvino.unavailable_reason()
    if backend == "litert":
        from edgeport.runtime.backends import litert

        return litert.unavailable_reason()
    if backend == "executorch":
        from edgeport.runtime.backends import executorch

        return executorch.unavailable_reason()
    from edgeport.runtime.backends.onnxrt import unavailable_reason

    return unavailable_reason(backend, device_index)


def machine_report(device_index: int = 0) -> dict[str, str | None]:
    """For every backend, None when it can run here, else why not."""
    return {name: backend_unavailable_reason(name, device_index) for name in BACKENDS}


def candidate_unavailable_reason(
    backend: str, candidate: ModelFile, device_index: int = 0
) -> str | None:
    """Why ``backend`` cannot run ``candidate`` here, decided without opening it."""
    if not runs_format(backend, candidate.format):
        return f"{backend} runs {formats_text(backend)} files, this is {candidate.format}"
    mismatch = precision_unavailable_reason(backend, candidate) or target_mismatch(
        backend, candidate
    )
    if mismatch:
        return mismatch
    if backend == "tensorrt":
        from edgeport.runtime.backends.tensorrt import static_unavailable_reason

        return static_unavailable_reason(candidate.engine, device_index)
    return backend_unavailable_reason(backend, device_index)


@dataclass(frozen=True)
class Request:
    """What the caller asked for: ``explicit`` when it named the precision or the artifact
    (its path) itself; ``allow_failed`` when it opted in to an artifact whose parity failed."""

    explicit: bool = False
    allow_failed: bool = False


AUTO = Request()


def steps(
    candidates: list[ModelFile],
    *,
    backend: str,
    precision: str | None,
    device_kind: str | None,
    device_index: int = 0,
    prefer: tuple[str, str] | None = None,
    request: Request = AUTO,
) -> Iterator[Attempt | tuple[str, ModelFile]]:
    """Everything ``load`` considers, lazily and in order: a (backend, candidate) pair to try
    opening, or an ``Attempt`` passed over without opening (with the reason). ``prefer``
    (backend, artifact name), a tuning record's winner, comes first when it holds here
    (:func:`record_refusal`)."""
    check_backend_name(backend)
    first = None
    if (
        backend == "auto"
        and prefer is not None
        and record_refusal(candidates, prefer, device_index) is None
    ):
        first = (prefer[0], next(c for c in candidates if c.label == prefer[1]))
    if first is None and precision is None:
        first = bf16_cpu_first(candidates, backend, device_kind, device_index)
    if first is not None:
        yield first
    for step in _rule_steps(candidates, backend, precision, device_kind, device_index, request):
        if first is None or step != first:
            yield step


def record_refusal(
    candidates: list[ModelFile], prefer: tuple[str, str], device_index: int = 0
) -> str | None:
    """Why a tuning record's winner (backend, artifact name) is not obeyed here, or None."""
    name, label = prefer
    if name not in BACKENDS:
        return (
            f"it names backend {name!r}, which this edgeport does not have "
            f"(it has {', '.join(BACKENDS)})"
        )
    cand = next((c for c in candidates if c.label == label), None)
    if cand is None:
        have = ", ".join(c.label for c in candidates)
        return f"it names artifact {label!r}, which this bundle does not have ({have})"
    why = trust_refusal(cand, AUTO)
    if why is None:
        why = candidate_unavailable_reason(name, cand, device_index)
    return None if why is None else f"{name} [{label}]: {why}"


def bf16_cpu_first(
    candidates: list[ModelFile],
    backend: str = "auto",
    device_kind: str | None = None,
    device_index: int = 0,
) -> tuple[str, ModelFile] | None:
    """The fixed rule's first pick on a CPU with bf16 arithmetic when no GPU is in play: the
    first (backend, precision) of :data:`BF16_CPU_FIRST` (of ``backend``'s, unless "auto")
    with a bundle artifact whose export parity passed and that can run here; None elsewhere."""
    pairs = [(b, p) for b, p in BF16_CPU_FIRST if backend in ("auto", b)]
    if not pairs or device_kind == "cuda" or not cpu_features().bf16:
        return None
    if backend == "auto" and device_kind is None and probe_gpus().reason is None:
        return None  # a GPU is here: the GPU backends come first
    for name, precision in pairs:
        for cand in candidates:
            if (
                cand.precision == precision
                and cand.format == FORMAT_OF[name]
                and cand.bundle_dir is not None
                and cand.parity_passed is True
                and candidate_unavailable_reason(name, cand, device_index) is None
            ):
                return name, cand
    return None


def rule_text() -> str:
    """The fixed rule as it applies on this machine, for ``Model.explain()``."""
    if not cpu_features().bf16:
        return PRECISION_RULE
    first = ", then ".join(f"{b} {p}" for b, p in BF16_CPU_FIRST)
    return f"this CPU has bf16 arithmetic: first {first} (parity passed), then {PRECISION_RULE}"


def _rule_steps(
    candidates: list[ModelFile],
    backend: str,
    precision: str | None,
    device_kind: str | None,
    device_index: int,
    request: Request,
) -> Iterator[Attempt | tuple[str, ModelFile]]:
    """The fixed rule: backends in AUTO_ORDER (or the one asked for), precisions in each
    backend's PRECISION_PREFERENCE, passing over what cannot run or failed parity."""
    gpu_here = probe_gpus().reason is None
    auto = backend == "auto"
    if auto and gpu_here and device_kind != "cpu" and any(c.format == "onnx" for c in candidates):
        yield from _trt_ep_note(device_index)
    for name in _backend_order(backend, device_kind):
        fmt = formats_text(name)
        mine = [c for c in candidates if runs_format(name, c.format)]
        if precision is not None:
            mine = [c for c in mine if c.precision == precision]
        if not mine and auto and name in PHONE_BACKENDS:
            continue  # a model without .tflite/.pte files: its explanation stays on the rest
        if not mine:
            what = f"{precision} {fmt}" if precision else fmt
            yield Attempt(name, "", precision, "skipped", f"no {what} artifact")
        elif auto and name in GPU_BACKENDS and not gpu_here:
            # Decided from the driver alone; what else is missing is asked only if shown, so
            # a CPU-only load imports no GPU library (cold start).
            yield from _no_gpu_attempts(name, mine, device_index)
        else:
            yield from _backend_steps(name, mine, device_index, request)


def _backend_order(backend: str, device_kind: str | None) -> list[str]:
    if backend == "auto":
        return [
            b
            for b in AUTO_ORDER
            if device_kind is None or (device_kind == "cpu") == (b not in GPU_BACKENDS)
        ]
    if device_kind == "cpu" and backend in GPU_BACKENDS:
        raise ConfigError(f"backend {backend!r} runs on a GPU, but device='cpu' was asked for")
    if device_kind == "cuda" and backend not in GPU_BACKENDS:
        raise ConfigError(f"backend {backend!r} runs on the CPU, but a CUDA device was asked for")
    return [backend]


def _trt_ep_note(device_index: int) -> Iterator[Attempt]:
    from edgeport.runtime.backends.onnxrt import unavailable_reason

    if unavailable_reason("onnxruntime-tensorrt", device_index) is None:
        yield Attempt(
            "onnxruntime-tensorrt",
            "",
            None,
            "skipped",
            f"not tried automatically: {BY_NAME_ONLY['onnxruntime-tensorrt']}; ask for "
            "backend='onnxruntime-tensorrt'",
        )


def _backend_steps(
    name: str, mine: list[ModelFile], device_index: int, request: Request
) -> Iterator[Attempt | tuple[str, ModelFile]]:
    """One backend's candidates in its precision preference, or why it cannot run them."""
    if name != "tensorrt":
        reason = backend_unavailable_reason(name, device_index)
        if reason is not None:
            yield Attempt(name, "", None, "skipped", reason)
            return
    preference = PRECISION_PREFERENCE[name]
    mine = sorted(  # by precision; at one precision a backend's own format (OpenVINO IR) first
        mine,
        key=lambda c: (
            preference.index(c.precision) if c.precision in preference else 99,
            c.format == FORMAT_OF[name] and name in EXTRA_FORMATS,
        ),
    )
    for cand in mine:
        why = (
            precision_unavailable_reason(name, cand)
            or target_mismatch(name, cand)
            or trust_refusal(cand, request)
        )
        if why is None and name == "tensorrt":
            why = candidate_unavailable_reason(name, cand, device_index)
        if why:
            yield Attempt(name, cand.label, cand.precision, "skipped", why)
        else:
            yield name, cand


def _no_gpu_attempts(name: str, mine: list[ModelFile], device_index: int) -> Iterator[Attempt]:
    if name != "tensorrt":
        yield Attempt(name, "", None, "skipped", lambda: backend_unavailable_reason(name))
        return
    for cand in mine:
        yield Attempt(
            name,
            cand.label,
            cand.precision,
            "skipped",
            lambda c=cand: candidate_unavailable_reason(name, c, device_index),  # type: ignore[misc]
        )


def plan(
    candidates: list[ModelFile],
    *,
    backend: str,
    precision: str | None,
    device_kind: str | None,
    device_index: int = 0,
    request: Request = AUTO,
) -> tuple[list[tuple[str, ModelFile]], list[Attempt]]:
    """The (backend, candidate) pairs to open, best first, and the ones passed over, with why."""
    ordered = list(
        steps(
            candidates,
            backend=backend,
            precision=precision,
            device_kind=device_kind,
            device_index=device_index,
            request=request,
        )
    )
    return (
        [s for s in ordered if not isinstance(s, Attempt)],
        [s for s in ordered if isinstance(s, Attempt)],
    )


def target_mismatch(backend: str, cand: ModelFile) -> str | None:
    """Why ``backend`` does not run ``cand``: it was made for another engine family."""
    if cand.target is None or cand.target == TARGET_OF[backend]:
        return None
    return f"made for {cand.target}, not for {TARGET_OF[backend]} ({backend} runs those)"


def ort_bf16_reason(machine: str) -> str:
    """Why ONNX Runtime's CPU provider does not run bf16 artifacts on a ``machine``
    (``platform.machine()``) CPU: it has no bf16 convolution kernels anywhere, and its one bf16
    switch covers MatMul on Arm64 Linux."""
    option = "mlas.enable_gemm_fastmath_arm64_bfloat16"
    if machine.lower() in ("aarch64", "arm64"):
        why = f"its one bf16 option ({option}) covers MatMul only, not convolutions"
    else:
        why = f"it has no bf16 kernels for {machine} CPUs ({option} is for Arm64 Linux)"
    return (
        f"ONNX Runtime's CPU provider does not run fp32 files in bf16: {why}; bf16 runs on openvino"
    )


def precision_unavailable_reason(backend: str, cand: ModelFile) -> str | None:
    """Why ``backend`` cannot run ``cand``'s precision on this machine, or None. A bf16
    artifact (the fp32 file run with bf16 arithmetic) needs an engine that computes in bf16 and
    a CPU that has it; no other precision depends on the machine (GPU backends are told apart
    by the artifact's target)."""
    if cand.precision != "bf16":
        return None
    if backend == "openvino":
        from edgeport.runtime.backends import openvino

        return openvino.precision_unavailable_reason("bf16")
    return ort_bf16_reason(platform.machine()) if backend == "onnxruntime-cpu" else None


def parity_failed_text(cand: ModelFile) -> str:
    """Why a candidate's export parity check failed, for skip reasons and load warnings."""
    failures = "; ".join(cand.parity_failures) or "see the manifest"
    return f"its export parity check failed ({failures})"


ALLOW_FAILED_HINT = "allow_failed=True (--allow-failed)"


def trust_refusal(cand: ModelFile, request: Request = AUTO) -> str | None:
    """Why ``cand`` may not run for this request, decided from its manifest entry (the hash is
    checked when it is read): its export parity check failed (auto never runs it; an explicit
    request needs ``allow_failed``), or it is reduced precision whose parity was not checked
    and nobody asked for it by name. None for a file no manifest describes."""
    if cand.bundle_dir is None:
        return None
    passed = cand.parity_passed
    if passed is False:
        if request.explicit:
            if request.allow_failed:
                return None
            return f"{parity_failed_text(cand)}; to run it anyway, ask with {ALLOW_FAILED_HINT}"
        return (
            f"{parity_failed_text(cand)}; auto never runs it (to run it anyway, ask for "
            f"precision={cand.precision!r} with {ALLOW_FAILED_HINT})"
        )
    if passed is None and cand.precision != "fp32" and not request.explicit:
        return (
            "its parity was not checked at export, and reduced precision is only picked "
            f"automatically after a passed check; ask for precision={cand.precision!r} to load it"
        )
    return None


def short_reason(text: str) -> str:
    """The loader's multi-line "no backend can run ... :\n  - why" as one line of whys."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return text.strip()
    return "; ".join(line.removeprefix("- ") for line in lines[1:])
