"""Which backends exist, which can run here, and in what order ``load`` tries them.

Each backend module exports its records (:class:`~edgeport.runtime.backends.spec.BackendSpec`,
in ``SPECS``); this registry holds them, in the order ``auto`` tries them, and everything else
(``load``, ``explain``, ``inspect``, the tools, the CLI's ``--backend`` choices) asks it.
:func:`register` adds one from outside edgeport. Backend modules import their engines only when
asked to open a model or say whether they can run (as tinygrad finds devices): asking whether
``tensorrt`` can run imports ``tensorrt`` and nothing else.

Auto-selection (``backend="auto"``) follows this machine's tuning record when one matches
(:mod:`edgeport.runtime.tuning_records`, by ``edgeport tune``); otherwise it tries, fastest first
by rule: ``tensorrt`` (an engine built for this GPU), ``onnxruntime-cuda``, ``onnxruntime-cpu``,
``openvino`` (the CPU engine that wins on larger int8 models; ``tune`` finds when), then the
phone formats' own runtimes, ``litert`` (``.tflite``) and ``executorch`` (``.pte``).
``onnxruntime-tensorrt`` is never picked automatically, since it builds a TensorRT engine inside
the session on every load (minutes); ask for it by name. Every candidate that is passed over is
recorded as an :class:`Attempt` with the reason, which ``Model.explain()`` prints.

An artifact made for one engine family (``Artifact.target``: an int8 file quantized in the form
OpenVINO fuses, say) is run only by that family's backends (``BackendSpec.target``).

Precision (``precision=None``) follows each backend's ``BackendSpec.precisions``, fastest first
(:func:`precision_rule`), and takes the first artifact whose export parity check passed (an fp32
artifact is also taken when parity was not checked: it is the reference format). Reduced
precision that skipped its parity check is only loaded when asked for by name.

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

import importlib
import platform
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.backends.spec import BackendSpec, ModelFile
from edgeport.runtime.cpu_features import cpu_features
from edgeport.runtime.errors import ConfigError

__all__ = ["BackendSpec", "ModelFile", "backend_spec", "backend_specs", "register", "unregister"]

# The modules of edgeport's own backends, each exporting SPECS; their order is the auto order.
BUILTIN_MODULES = ("tensorrt", "onnxrt", "openvino", "litert", "executorch")
_specs: dict[str, BackendSpec] = {}
_lock = threading.Lock()
# On CPUs with bf16 arithmetic, what is fastest there, tried before the order above. Measured
# in interleaved rounds (2 threads, AMD EPYC Zen 4 with AVX512_BF16, no AMX; simple_cnn_bn 32x32,
# resnet18 and mobilenet_v3_small 224x224 trained on digits, batch 1 and 8; the fixed-rule table
# of benchmarks/results/amd-epyc-2c/README.md): against ONNX Runtime fp32 first it gains 1.04x to
# 2.0x on the 224x224 models and loses 2.5x on the small CNN at batch 1, where tune picks ORT.
BF16_CPU_FIRST: tuple[tuple[str, str], ...] = (("openvino", "bf16"),)


def backend_specs() -> tuple[BackendSpec, ...]:
    """Every registered backend, in the order ``auto`` tries them."""
    with _lock:
        if not _specs:
            for module in BUILTIN_MODULES:
                found = importlib.import_module(f"edgeport.runtime.backends.{module}").SPECS
                _specs.update((s.name, s) for s in found)
        return tuple(_specs.values())


def backend_names() -> tuple[str, ...]:
    return tuple(s.name for s in backend_specs())


class BackendNames(Sequence[str]):
    """The registered backends' names, read from the registry at each use (so a choice list
    made before a :func:`register` sees the new backend): ``"auto"`` first when ``with_auto``,
    ``extra`` names last; ``order`` rearranges (and may filter) the records, registry order by
    default."""

    def __init__(
        self,
        *,
        with_auto: bool = False,
        order: Callable[[tuple[BackendSpec, ...]], Iterable[BackendSpec]] | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        self._with_auto = with_auto
        self._order = order
        self._extra = extra

    def _names(self) -> tuple[str, ...]:
        specs = backend_specs()
        names = tuple(s.name for s in (self._order(specs) if self._order else specs))
        return (*(("auto",) if self._with_auto else ()), *names, *self._extra)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


BACKENDS = BackendNames()  # every registered backend, in auto's order


def backend_spec(name: str) -> BackendSpec:
    """The record of backend ``name``; ``ConfigError`` naming the others when there is none."""
    for found in backend_specs():
        if found.name == name:
            return found
    raise ConfigError(f"unknown backend {name!r}; expected 'auto' or one of {backend_names()}")


def register(spec: BackendSpec, *, before: str | None = None) -> None:
    """Add a backend: ``load``, ``explain``, ``inspect``, the tools and the CLI's ``--backend``
    choices find it from now on. It goes last in the auto order, or just before ``before``."""
    current = backend_specs()
    if spec.name in (s.name for s in current):
        raise ConfigError(f"a backend named {spec.name!r} is registered already")
    names = [s.name for s in current]
    if before is not None and before not in names:
        raise ConfigError(f"cannot register {spec.name!r} before unknown backend {before!r}")
    at = names.index(before) if before is not None else len(current)
    with _lock:
        _specs.clear()
        _specs.update((s.name, s) for s in (*current[:at], spec, *current[at:]))


def unregister(name: str) -> None:
    """Remove a backend added with :func:`register`."""
    backend_spec(name)
    with _lock:
        del _specs[name]


def precision_rule() -> str:
    """``precision=None``'s rule in words, from the records of the backends auto tries."""
    return (
        "precision=None takes, for each backend in order, the first artifact in its preference "
        "order whose export parity check passed (fp32 also when unchecked): "
        + "; ".join(f"{s.name}: {' > '.join(s.precisions)}" for s in backend_specs() if s.auto)
    )


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
    return backend_spec(backend).runs(fmt)


def formats_text(backend: str) -> str:
    return backend_spec(backend).formats_text


def check_backend_name(backend: str) -> str:
    if backend != "auto":
        backend_spec(backend)
    return backend


def backend_unavailable_reason(backend: str, device_index: int = 0) -> str | None:
    """Why ``backend`` cannot run on this machine at all, or None (no model is opened)."""
    return backend_spec(backend).unavailable(None, device_index)


def machine_report(device_index: int = 0) -> dict[str, str | None]:
    """For every backend, None when it can run here, else why not."""
    return {s.name: s.unavailable(None, device_index) for s in backend_specs()}


def candidate_unavailable_reason(
    backend: str, candidate: ModelFile, device_index: int = 0
) -> str | None:
    """Why ``backend`` cannot run ``candidate`` here, decided without opening it."""
    spec = backend_spec(backend)
    if not spec.runs(candidate.format):
        return f"{backend} runs {spec.formats_text} files, this is {candidate.format}"
    mismatch = precision_unavailable_reason(backend, candidate) or target_mismatch(
        backend, candidate
    )
    if mismatch:
        return mismatch
    return spec.unavailable(candidate, device_index)


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
    if name not in backend_names():
        return (
            f"it names backend {name!r}, which this edgeport does not have "
            f"(it has {', '.join(backend_names())})"
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
                and cand.format == backend_spec(name).format
                and cand.bundle_dir is not None
                and cand.parity_passed is True
                and candidate_unavailable_reason(name, cand, device_index) is None
            ):
                return name, cand
    return None


def rule_text() -> str:
    """The fixed rule as it applies on this machine, for ``Model.explain()``."""
    if not cpu_features().bf16:
        return precision_rule()
    first = ", then ".join(f"{b} {p}" for b, p in BF16_CPU_FIRST)
    return f"this CPU has bf16 arithmetic: first {first} (parity passed), then {precision_rule()}"


def _rule_steps(
    candidates: list[ModelFile],
    backend: str,
    precision: str | None,
    device_kind: str | None,
    device_index: int,
    request: Request,
) -> Iterator[Attempt | tuple[str, ModelFile]]:
    """The fixed rule: backends in the registry's order (or the one asked for), precisions in
    each backend's preference, passing over what cannot run or failed parity."""
    gpu_here = probe_gpus().reason is None
    auto = backend == "auto"
    if auto:
        yield from _manual_notes(candidates, device_kind, gpu_here, device_index)
    for spec in _backend_order(backend, device_kind):
        mine = [c for c in candidates if spec.runs(c.format)]
        if precision is not None:
            mine = [c for c in mine if c.precision == precision]
        if not mine and auto and spec.optional_format:
            continue  # a model without .tflite/.pte files: its explanation stays on the rest
        if not mine:
            what = f"{precision} {spec.formats_text}" if precision else spec.formats_text
            yield Attempt(spec.name, "", precision, "skipped", f"no {what} artifact")
        elif auto and spec.device == "cuda" and not gpu_here:
            # Decided from the driver alone; what else is missing is asked only if shown, so
            # a CPU-only load imports no GPU library (cold start).
            yield from _no_gpu_attempts(spec, mine, device_index)
        else:
            yield from _backend_steps(spec, mine, device_index, request)


def _backend_order(backend: str, device_kind: str | None) -> list[BackendSpec]:
    if backend == "auto":
        return [
            s
            for s in backend_specs()
            if s.auto and (device_kind is None or device_kind == s.device)
        ]
    spec = backend_spec(backend)
    if device_kind == "cpu" and spec.device == "cuda":
        raise ConfigError(f"backend {backend!r} runs on a GPU, but device='cpu' was asked for")
    if device_kind == "cuda" and spec.device == "cpu":
        raise ConfigError(f"backend {backend!r} runs on the CPU, but a CUDA device was asked for")
    return [spec]


def _manual_notes(
    candidates: list[ModelFile], device_kind: str | None, gpu_here: bool, device_index: int
) -> Iterator[Attempt]:
    """The backends auto never tries that could run this model here, with why (ONNX Runtime's
    TensorRT provider builds an engine whenever a session opens)."""
    for spec in backend_specs():
        if spec.auto or not spec.manual_reason or (spec.device == "cuda" and not gpu_here):
            continue
        if device_kind not in (None, spec.device):
            continue
        runs_one = any(spec.runs(c.format) for c in candidates)
        if runs_one and spec.unavailable(None, device_index) is None:
            yield Attempt(spec.name, "", None, "skipped", spec.manual_reason)


def _backend_steps(
    spec: BackendSpec, mine: list[ModelFile], device_index: int, request: Request
) -> Iterator[Attempt | tuple[str, ModelFile]]:
    """One backend's candidates in its precision preference, or why it cannot run them."""
    name = spec.name
    if not spec.per_file:
        reason = spec.unavailable(None, device_index)
        if reason is not None:
            yield Attempt(name, "", None, "skipped", reason)
            return
    preference = spec.precisions
    mine = sorted(  # by precision; at one precision a backend's other formats (OpenVINO IR) first
        mine,
        key=lambda c: (
            preference.index(c.precision) if c.precision in preference else 99,
            c.format == spec.format and len(spec.formats) > 1,
        ),
    )
    for cand in mine:
        why = (
            precision_unavailable_reason(name, cand)
            or target_mismatch(name, cand)
            or trust_refusal(cand, request)
        )
        if why is None and spec.per_file:
            why = spec.unavailable(cand, device_index)
        if why:
            yield Attempt(name, cand.label, cand.precision, "skipped", why)
        else:
            yield name, cand


def _no_gpu_attempts(
    spec: BackendSpec, mine: list[ModelFile], device_index: int
) -> Iterator[Attempt]:
    name = spec.name
    if not spec.per_file:
        yield Attempt(name, "", None, "skipped", lambda: spec.unavailable(None, 0))
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
    target = backend_spec(backend).target
    if cand.target is None or cand.target == target:
        return None
    return f"made for {cand.target}, not for {target} ({backend} runs those)"


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
    """Why ``backend`` cannot run ``cand``'s precision on this machine, or None (its record's
    ``precision_unavailable``). A bf16 artifact (the fp32 file run with bf16 arithmetic) needs
    an engine that computes in bf16 and a CPU that has it; no other precision depends on the
    machine (GPU backends are told apart by the artifact's target)."""
    check = backend_spec(backend).precision_unavailable
    return None if check is None or cand.precision is None else check(cand.precision)


def cpu_bf16_reason(precision: str) -> str | None:
    """ONNX Runtime CPU's ``precision_unavailable``: it never runs bf16 artifacts."""
    return ort_bf16_reason(platform.machine()) if precision == "bf16" else None


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
