"""PyTorch baselines for ``edgeport bench`` and the PyTorch reference of ``edgeport check``.

Each baseline rebuilds the network from a bundle (model card + ``reference/weights.safetensors``)
and runs it numpy in, numpy out, like a runtime ``Model``. They are found through the
``edgeport.baselines`` entry-point group, so the torch-free runtime never imports this module:

- ``torch`` (:class:`TorchEagerBaseline`): eager mode, fp32 (CPU or CUDA) or fp16 (CUDA);
  with ``cuda_graph=True`` on CUDA, one captured CUDA graph per batch size is replayed.
- ``torch-compile`` (:class:`TorchCompileBaseline`): ``torch.compile`` of the same model.
  Compilation happens on the first call of each batch size and can fail on some set-ups (no C++
  compiler, unsupported Python); the failure is raised as ``BackendUnavailable`` with its reason.

On CUDA, :meth:`TorchEagerBaseline.device_stages` splits one call into host-to-device copy,
compute and device-to-host copy, timed by the benchmark with ``torch.cuda.Event``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeport.runtime.bundle import Manifest
from edgeport.runtime.errors import BackendUnavailable, ConfigError, InputError, ModelLoadError
from edgeport.runtime.reference import reference_file
from edgeport.runtime.tools.timing import DeviceStages

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
_GRAPH_WARMUP_CALLS = 3


def _compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a failing ``torch.compile`` raises (dynamo, inductor, the C++ compiler)."""
    errors: list[type[BaseException]] = [RuntimeError, OSError, ImportError, AssertionError]
    try:
        from torch._dynamo.exc import TorchDynamoException

        errors.append(TorchDynamoException)
    except ImportError:
        pass
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def weights_path(bundle_dir: Path, manifest: Manifest) -> Path:
    """The bundle's PyTorch weights, checked against the manifest's sha256 when listed."""
    path = reference_file(bundle_dir, manifest, "weights")
    if path is None:
        raise ModelLoadError(
            f"bundle {bundle_dir} has no reference weights in its manifest, so PyTorch cannot "
            "rebuild the model; re-export it with a current edgeport-export"
        )
    return path


class _TorchEvent:
    """``torch.cuda.Event`` behind the benchmark's ``DeviceEvent`` protocol."""

    def __init__(self) -> None:
        self._event = torch.cuda.Event(enable_timing=True)

    def record(self) -> None:
        self._event.record(torch.cuda.current_stream())

    def synchronize(self) -> None:
        self._event.synchronize()

    def elapsed_ms(self, end: Any) -> float:
        return float(self._event.elapsed_time(end._event))


class TorchEagerBaseline:
    """The bundle's network in PyTorch eager mode (optionally replayed as CUDA graphs)."""

    name = "torch"

    def __init__(
        self,
        bundle_dir: str | Path,
        manifest: Manifest | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int | None = None,
        cuda_graph: bool = False,
    ) -> None:
        if device not in DEVICES:
            raise ConfigError(f"baseline device must be one of {DEVICES}, got {device!r}")
        if precision not in _DTYPES:
            raise ConfigError(
                f"PyTorch baselines run fp32 or fp16, got {precision!r} (int8 has no eager "
                "PyTorch equivalent here)"
            )
        if device == "cpu" and precision == "fp16":
            raise ConfigError("the fp16 PyTorch baseline needs device='cuda'; use fp32 on CPU")
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable(
                f"PyTorch sees no CUDA device (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda}); run the baseline on cpu"
            )
        if cuda_graph and device != "cuda":
            raise ConfigError("CUDA-graph replay needs device='cuda'")
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest or Manifest.load(self.bundle_dir)
        self.card = self.manifest.card
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = _DTYPES[precision]
        self.cuda_graph = cuda_graph
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self.model = self._build().to(self.device, self.dtype).eval()
        self._forward = self._make_forward(self.model)

    def _build(self) -> nn.Module:
        from edgeport.train.checkpoint import load_weights_into
        from edgeport.train.models import build_model_from_card

        model = build_model_from_card(self.card)
        load_weights_into(model, weights_path(self.bundle_dir, self.manifest))
        return model.eval()

    def _make_forward(self, model: nn.Module) -> Any:
        return model

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None: eager PyTorch runs wherever torch imports (this module imported it)."""
        return None

    # -- running ---------------------------------------------------------------------------

    def _check(self, batch: np.ndarray) -> np.ndarray:
        if not isinstance(batch, np.ndarray):
            raise InputError(f"expected a numpy array, got {type(batch).__name__}")
        expected = self.card.input_shape
        if batch.ndim != 4 or tuple(batch.shape[1:]) != expected or batch.shape[0] < 1:
            raise InputError(
                f"expected a float32 batch of shape (N, {', '.join(map(str, expected))}), got "
                f"{batch.dtype} {batch.shape}"
            )
        if batch.dtype != np.float32:
            raise InputError(f"expected dtype float32, got {batch.dtype}")
        return np.ascontiguousarray(batch)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        """Forward on a device tensor of this baseline's dtype; float32 logits on the device."""
        if self.cuda_graph:
            graph, static_in, static_out = self._graph_for(x.shape[0])
            static_in.copy_(x)
            graph.replay()
            return static_out.float()
        try:
            return self._forward(x).float()
        except _compile_errors() as exc:
            if self._forward is self.model:
                raise
            raise BackendUnavailable(
                f"torch.compile failed for batch {x.shape[0]} on {self.device.type}: "
                f"{_first_line(exc)}"
            ) from exc

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 NCHW in, float32 logits (N, classes) out."""
        batch = self._check(batch)
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device, self.dtype)
            return self._call(x).cpu().numpy()

    def _graph_for(self, n: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        """A CUDA graph of the forward pass at batch ``n``, captured on first use."""
        if n in self._graphs:
            return self._graphs[n]
        static_in = torch.zeros((n, *self.card.input_shape), device=self.device, dtype=self.dtype)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(_GRAPH_WARMUP_CALLS):  # cuDNN/cuBLAS pick kernels before capture
                    self._forward(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.no_grad(), torch.cuda.graph(graph):
                static_out = self._forward(static_in)
        except RuntimeError as exc:  # capture refuses some operations; say so, do not hide it
            raise BackendUnavailable(
                f"CUDA graph capture of {self.card.architecture} at batch {n} failed: "
                f"{_first_line(exc)}"
            ) from exc
        log.info("captured a CUDA graph of %s at batch %d", self.card.architecture, n)
        self._graphs[n] = (graph, static_in, static_out)
        return self._graphs[n]

    def device_stages(self, batch: np.ndarray) -> DeviceStages:
        """One call split into H2D copy (pinned), compute and D2H copy (pinned), on CUDA."""
        if self.device.type != "cuda":
            raise ConfigError("device stages exist only for a CUDA baseline")
        batch = self._check(batch)
        host_in = torch.from_numpy(batch).pin_memory()
        dev_in = torch.empty(host_in.shape, device=self.device, dtype=torch.float32)
        host_out = torch.empty(
            (batch.shape[0], self.card.num_classes), dtype=torch.float32, pin_memory=True
        )
        state: dict[str, torch.Tensor] = {}
        if self.cuda_graph:
            with torch.inference_mode():
                self._graph_for(batch.shape[0])

        def h2d() -> None:
            dev_in.copy_(host_in, non_blocking=True)

        def compute() -> None:
            with torch.inference_mode():
                state["out"] = self._call(dev_in.to(self.dtype))

        def d2h() -> None:
            host_out.copy_(state["out"], non_blocking=True)

        return DeviceStages(
            stages=(("h2d", h2d), ("compute", compute), ("d2h", d2h)),
            new_event=_TorchEvent,
            timer="torch.cuda.Event",
        )

    def close(self) -> None:
        self._graphs.clear()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()

    def __enter__(self) -> TorchEagerBaseline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TorchCompileBaseline(TorchEagerBaseline):
    """The same network through ``torch.compile`` (compiled on the first call per shape)."""

    name = "torch-compile"

    def __init__(self, *args: Any, mode: str | None = None, **kwargs: Any) -> None:
        self._mode = mode
        super().__init__(*args, **kwargs)

    def _make_forward(self, model: nn.Module) -> Any:
        try:
            return torch.compile(model, mode=self._mode, dynamic=False)
        except _compile_errors() as exc:
            raise BackendUnavailable(f"torch.compile is unavailable: {_first_line(exc)}") from exc

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why ``torch.compile`` cannot work here at all, or None when it may."""
        try:
            import torch._dynamo

            if not torch._dynamo.is_dynamo_supported():
                return (
                    "torch.compile is not supported on this Python/platform "
                    f"(torch {torch.__version__})"
                )
        except (ImportError, RuntimeError) as exc:
            return f"torch.compile is unavailable: {_first_line(exc)}"
        return None
