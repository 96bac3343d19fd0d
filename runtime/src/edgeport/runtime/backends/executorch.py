"""The ExecuTorch backend: ``.pte`` programs (PyTorch's on-device format) run by ExecuTorch's
Python runtime, with the XNNPACK delegate the program was lowered to.

On a phone or microcontroller ExecuTorch is a C++ runtime without Python or torch. Its Python
runtime (``executorch.runtime``, from the ``executorch`` wheel) is what runs a ``.pte`` on a
host, and it takes and returns torch tensors: unlike every other edgeport backend, this one
needs **torch** installed beside ``executorch`` (``pip install 'edgeport-runtime[executorch]'``
and torch). ``edgeport inspect`` says so.

A ``.pte`` names neither its inputs nor its outputs: a bundle's manifest does; a bare file's are
``input``/``output`` (``input_0``, ``input_1``, ... when there are several). Its method metadata
gives each input's memory-planned sizes, the upper bound of a dynamic dimension, so a bare
file's leading axis is taken as a batch of 1 up to that size. ``threads`` resizes ExecuTorch's
one thread pool, which the whole process shares. Calls are serialised (a method's planned
memory is shared by its calls). The program is loaded from the bytes ``load`` read and verified
(ExecuTorch's ``load_program`` takes a buffer), never from the file's path.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend, ModelBytes
from edgeport.runtime.backends.spec import BackendSpec, OpenRequest
from edgeport.runtime.envinfo import package_version
from edgeport.runtime.errors import BackendUnavailable, InputError, ModelLoadError
from edgeport.runtime.specs import TensorSpec

log = logging.getLogger(__name__)

INSTALL = "pip install 'edgeport-runtime[executorch]' (its Python runtime also needs torch)"
NEEDS = (
    "the executorch package and torch: ExecuTorch's Python runtime takes torch tensors (on a "
    "device, its C++ runtime needs neither)"
)
METHOD = "forward"
# ExecuTorch's ScalarType codes (c10's) of the dtypes edgeport runs
_DTYPES = {
    0: "uint8",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "int64",
    5: "float16",
    6: "float32",
    7: "float64",
    11: "bool",
    15: "bfloat16",
}


def unavailable_reason() -> str | None:
    """Why ExecuTorch's Python runtime cannot run here (executorch or torch missing), or None."""
    missing = [m for m in ("executorch", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed; ExecuTorch here needs {NEEDS}: {INSTALL}"
    return None


def import_runtime() -> ModuleType:
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"the executorch backend: {reason}")
    try:
        import executorch.runtime
    except ImportError as exc:
        raise BackendUnavailable(f"ExecuTorch cannot be imported ({exc}): {INSTALL}") from exc
    return executorch.runtime


def default_names(kind: str, count: int) -> list[str]:
    """``input``/``output`` for one tensor, ``input_0``, ``input_1``, ... for several."""
    return [kind] if count == 1 else [f"{kind}_{i}" for i in range(count)]


class ExecuTorchBackend(Backend):
    """The ``forward`` method of one ExecuTorch program."""

    name = "executorch"

    def __init__(
        self,
        model: ModelBytes,
        *,
        threads: int | None = None,
        input_names: Sequence[str] = (),
        output_names: Sequence[str] = (),
    ) -> None:
        runtime = import_runtime()
        import torch
        from executorch.extension.pybindings import portable_lib

        self.path = path = model.path
        self._torch = torch
        self._version = package_version("executorch") or "unknown"
        if threads is not None:
            portable_lib._unsafe_reset_threadpool(threads)  # the process's one pool
        try:
            # the program keeps the buffer its methods run from: it lives as long as they do
            self._program: Any = runtime.Runtime.get().load_program(model.data)
            program = self._program
            if METHOD not in program.method_names:
                raise ModelLoadError(
                    f"{path}: the ExecuTorch program has methods {sorted(program.method_names)}, "
                    f"edgeport runs {METHOD!r}"
                )
            self._method: Any = program.load_method(METHOD)
        except RuntimeError as exc:
            raise ModelLoadError(f"ExecuTorch cannot load {path}: {exc}") from exc
        meta = self._method.metadata
        self.inputs = _specs(path, meta, "input", input_names)
        self.outputs = _specs(path, meta, "output", output_names)
        self._threads = portable_lib._threadpool_get_thread_count()
        self._lock = threading.Lock()
        log.debug("loaded %s with ExecuTorch %s", path, self._version)

    def infer(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        method = self._method
        if method is None:
            raise ModelLoadError(f"the executorch program {self.path} was closed")
        tensors = [self._torch.from_numpy(a) for a in arrays]
        try:
            with self._lock:
                outputs = method.execute(tensors)
        except RuntimeError as exc:
            shapes = [list(a.shape) for a in arrays]
            raise InputError(
                f"executorch failed on inputs of shapes {shapes}: {exc}; a program exported with "
                "static shapes takes only those (its memory-planned sizes are the upper bounds: "
                "edgeport inspect shows them)"
            ) from exc
        return [t.numpy() for t in outputs]

    def close(self) -> None:
        self._method = self._program = None

    def describe(self) -> dict[str, Any]:
        return {
            "library": f"executorch {self._version}",
            "device": "CPU (the program's delegates: XNNPACK for edgeport's exports)",
            "threads": self._threads,
            "needs": NEEDS,
        }


def _specs(path: Path, meta: Any, kind: str, names: Sequence[str]) -> tuple[TensorSpec, ...]:
    """The method's inputs or outputs; the leading axis 1..its planned size (a batch)."""
    count = meta.num_inputs() if kind == "input" else meta.num_outputs()
    infos = [
        meta.input_tensor_meta(i) if kind == "input" else meta.output_tensor_meta(i)
        for i in range(count)
    ]
    if len(names) != count:
        names = default_names(kind, count)
    specs = []
    for name, info in zip(names, infos, strict=True):
        dtype = _DTYPES.get(info.dtype())
        if dtype is None:
            raise ModelLoadError(
                f"{path}: {kind} {name!r} has ExecuTorch scalar type {info.dtype()}, which "
                f"edgeport does not run (it runs {', '.join(sorted(set(_DTYPES.values())))})"
            )
        sizes = tuple(int(d) for d in info.sizes())
        if not sizes:
            specs.append(TensorSpec(name, dtype, ()))
            continue
        ranges = ((1, 1, sizes[0]), *((d, d, d) for d in sizes[1:]))
        specs.append(TensorSpec(name, dtype, ("batch", *sizes[1:]), ranges))
    return tuple(specs)


def _open(request: OpenRequest) -> Backend:
    return ExecuTorchBackend(
        request.model,
        threads=request.threads,
        input_names=request.input_names,
        output_names=request.output_names,
    )


SPECS = (
    BackendSpec(
        name="executorch",
        formats=("executorch",),
        target="executorch",
        device="cpu",
        precisions=("fp32", "int8", "fp16"),
        unavailable=lambda file, device_index: unavailable_reason(),
        open=_open,
        packages=("executorch",),
        optional_format=True,
    ),
)
