"""ONNX Runtime CUDA timed stage by stage, like trtexec: H2D copy, compute, D2H copy.

``Model.run`` is numpy in, numpy out, so the benchmark can only time it whole. To report the
three stages separately, this opens the same bundle artifact in its own ``InferenceSession`` on
the CUDA execution provider with a stream of ours (``user_compute_stream``), binds device
buffers of ours (cuda-python ``cudaMalloc``) with IOBinding, copies pinned host memory in and
out with ``cudaMemcpyAsync`` on that stream, and lets the benchmark record CUDA events between
the stages on the same stream. ``disable_synchronize_execution_providers`` keeps ORT from
synchronising at the end of ``run_with_iobinding``, so each stage only enqueues work.

With ``cuda_graph=True`` the provider captures a CUDA graph on the first runs and replays it;
the bound addresses then must not change, so one session serves one batch size.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.cuda import cuda_call, cudart
from edgeport.runtime.backends.onnxrt import ort_errors
from edgeport.runtime.bundle import Manifest, verify_artifact
from edgeport.runtime.errors import BackendUnavailable, InputError
from edgeport.runtime.tools.bench import Plan, Timed, by_name
from edgeport.runtime.tools.timing import CudaEvent, DeviceStages

log = logging.getLogger(__name__)

BACKEND = "onnxruntime-cuda-staged"
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass
class _Buffers:
    """Pinned host and device buffers of one batch size, and the IOBinding over them."""

    batch: int
    host_in: int
    dev_in: int
    dev_out: int
    host_out: int
    in_bytes: int
    out_bytes: int
    binding: Any


class StagedOrtCuda:
    """One ONNX file on ORT's CUDA provider, run as H2D / compute / D2H on our own stream."""

    def __init__(
        self, path: Path, *, num_classes: int, cuda_graph: bool = False, device_id: int = 0
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("staged ORT CUDA needs onnxruntime-gpu") from exc
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable(
                f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                f"({ort.get_available_providers()}): install onnxruntime-gpu"
            )
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        self._rt = rt = cudart()
        cuda_call(rt.cudaSetDevice(device_id), "cudaSetDevice")
        self.stream = cuda_call(
            rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags"
        )
        self._stream_int = int(self.stream)
        options = {
            "device_id": str(device_id),
            "user_compute_stream": str(self._stream_int),
            "cudnn_conv_algo_search": "HEURISTIC",
            "enable_cuda_graph": "1" if cuda_graph else "0",
        }
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.log_severity_level = 3
        self._errors = ort_errors()
        try:
            self.session = ort.InferenceSession(
                str(path), session_options, providers=[("CUDAExecutionProvider", options)]
            )
        except self._errors as exc:  # e.g. a CUDA graph with nodes outside the CUDA EP
            cuda_call(rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            raise BackendUnavailable(
                f"ORT CUDA{' with CUDA graph' if cuda_graph else ''} cannot open {path.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if self.session.get_providers()[0] != "CUDAExecutionProvider":
            cuda_call(rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")
            raise BackendUnavailable(f"ORT fell back to {self.session.get_providers()}")
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")
        self.input, self.output = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.in_dtype = np.dtype(_ORT_DTYPES[self.input.type])
        self.out_dtype = np.dtype(_ORT_DTYPES[self.output.type])
        self.chw = tuple(int(d) for d in self.input.shape[1:])
        self.num_classes = num_classes
        self.cuda_graph = cuda_graph
        self._buffers: dict[int, _Buffers] = {}

    def _alloc(self, n: int) -> _Buffers:
        if n in self._buffers:
            return self._buffers[n]
        if self.cuda_graph and self._buffers:
            raise InputError("a CUDA-graph session serves one batch size; open another one")
        rt = self._rt
        in_bytes = n * int(np.prod(self.chw)) * self.in_dtype.itemsize
        out_bytes = n * self.num_classes * self.out_dtype.itemsize
        host_in = cuda_call(rt.cudaMallocHost(in_bytes), "cudaMallocHost")
        host_out = cuda_call(rt.cudaMallocHost(out_bytes), "cudaMallocHost")
        dev_in = cuda_call(rt.cudaMalloc(in_bytes), "cudaMalloc")
        dev_out = cuda_call(rt.cudaMalloc(out_bytes), "cudaMalloc")
        binding = self.session.io_binding()
        binding.bind_input(
            self.input.name, "cuda", 0, self.in_dtype.type, [n, *self.chw], int(dev_in)
        )
        binding.bind_output(
            self.output.name, "cuda", 0, self.out_dtype.type, [n, self.num_classes], int(dev_out)
        )
        buffers = _Buffers(
            n, int(host_in), int(dev_in), int(dev_out), int(host_out), in_bytes, out_bytes, binding
        )
        self._buffers[n] = buffers
        return buffers

    def _fill(self, buffers: _Buffers, batch: np.ndarray) -> None:
        data = np.ascontiguousarray(batch, dtype=self.in_dtype)
        if data.nbytes != buffers.in_bytes:
            raise InputError(f"batch of {data.nbytes} bytes for a {buffers.in_bytes}-byte buffer")
        ctypes.memmove(buffers.host_in, data.ctypes.data, data.nbytes)

    def _h2d(self, b: _Buffers) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_call(
            self._rt.cudaMemcpyAsync(b.dev_in, b.host_in, b.in_bytes, kind, self._stream_int),
            "cudaMemcpyAsync H2D",
        )

    def _compute(self, b: _Buffers) -> None:
        try:
            self.session.run_with_iobinding(b.binding, self.run_options)
        except self._errors as exc:
            raise BackendUnavailable(
                f"ORT CUDA failed at batch {b.batch}: {type(exc).__name__}: {exc}"
            ) from exc

    def _d2h(self, b: _Buffers) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(
            self._rt.cudaMemcpyAsync(b.host_out, b.dev_out, b.out_bytes, kind, self._stream_int),
            "cudaMemcpyAsync D2H",
        )

    def _read(self, b: _Buffers) -> np.ndarray:
        raw = memoryview((ctypes.c_ubyte * b.out_bytes).from_address(b.host_out)).cast("B")
        out = np.frombuffer(raw, dtype=self.out_dtype).reshape(b.batch, self.num_classes)
        return out.astype(np.float32)  # a copy: the pinned buffer is reused

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The three stages, then a stream synchronisation: float32 logits."""
        b = self._alloc(batch.shape[0])
        self._fill(b, batch)
        self._h2d(b)
        self._compute(b)
        self._d2h(b)
        cuda_call(self._rt.cudaStreamSynchronize(self._stream_int), "cudaStreamSynchronize")
        return self._read(b)

    def device_stages(self, batch: np.ndarray) -> DeviceStages:
        b = self._alloc(batch.shape[0])
        self._fill(b, batch)
        return DeviceStages(
            stages=(
                ("h2d", lambda: self._h2d(b)),
                ("compute", lambda: self._compute(b)),
                ("d2h", lambda: self._d2h(b)),
            ),
            new_event=lambda: CudaEvent(self._stream_int),
            timer="cuda-events",
        )

    def close(self) -> None:
        if self.session is None:
            return
        rt = self._rt
        cuda_call(rt.cudaStreamSynchronize(self._stream_int), "cudaStreamSynchronize")
        self.session = None
        for b in self._buffers.values():
            cuda_call(rt.cudaFreeHost(b.host_in), "cudaFreeHost")
            cuda_call(rt.cudaFreeHost(b.host_out), "cudaFreeHost")
            cuda_call(rt.cudaFree(b.dev_in), "cudaFree")
            cuda_call(rt.cudaFree(b.dev_out), "cudaFree")
        self._buffers.clear()
        cuda_call(rt.cudaStreamDestroy(self.stream), "cudaStreamDestroy")


def plans(bundle_dir: Path, precisions: tuple[str, ...] = ("fp32", "fp16")) -> list[Plan]:
    """Benchmark plans for every ONNX artifact of ``precisions``: IOBinding, then CUDA graph."""
    manifest = Manifest.load(bundle_dir)
    out = []
    for precision in precisions:
        arts = [a for a in manifest.artifacts if a.format == "onnx" and a.precision == precision]
        if not arts:
            continue
        art = arts[0]
        for graph in (False, True):

            def open_staged(
                art: Any = art, graph: bool = graph, precision: str = precision
            ) -> Timed:
                runner = StagedOrtCuda(
                    verify_artifact(bundle_dir, art),
                    num_classes=manifest.card.num_classes,
                    cuda_graph=graph,
                )
                image, logits = art.inputs[0].name, art.outputs[0].name
                return Timed(
                    backend=BACKEND,
                    kind="edgeport",
                    precision=precision,
                    device="cuda",
                    inputs=art.inputs[:1],
                    outputs=art.outputs[:1],
                    run=by_name(runner.run, image, logits),
                    close=runner.close,
                    artifact=art.name,
                    cuda_graph=graph,
                    device_stages=by_name(runner.device_stages, image),
                    max_batch=art.batch.max,
                    min_batch=art.batch.min,
                )

            out.append(Plan(BACKEND, precision, "cuda", open_staged, art.name, fixed_shapes=graph))
    return out
