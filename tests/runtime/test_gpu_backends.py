"""GPU backends on a real NVIDIA GPU: ONNX Runtime CUDA (IOBinding, CUDA graphs) and TensorRT.

Every test compares with ONNX Runtime on the CPU. The gemm model's outputs are small integers,
exact in fp32, TF32 and fp16 alike, so those comparisons are exact; the CNN is compared within a
tolerance. conftest skips the whole file (marker ``gpu``) where no GPU is visible; a backend that
cannot run on this GPU skips with the runtime's own reason.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_bundles
import rt_engines
import rt_graphs
from _env import tensorrt_module_name

from edgeport.runtime import load
from edgeport.runtime.backends.cuda import probe_gpus
from edgeport.runtime.backends.registry import (
    ModelFile,
    backend_unavailable_reason,
    candidate_unavailable_reason,
)
from edgeport.runtime.bundle import BatchRange, EngineInfo
from edgeport.runtime.errors import InputError, ModelLoadError

pytestmark = pytest.mark.gpu


def need(backend: str) -> None:
    reason = backend_unavailable_reason(backend)
    if reason is not None:
        pytest.skip(f"{backend} cannot run here: {reason}")


def cnn_reference(cnn_onnx: Path, batch: np.ndarray) -> np.ndarray:
    with load(cnn_onnx, backend="onnxruntime-cpu", threads=1) as cpu:
        return cpu.run(batch)


def assert_close_logits(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, atol=1e-4 * max(scale, 1.0), rtol=1e-4)
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


# -- ONNX Runtime CUDA ----------------------------------------------------------------------


def test_ort_cuda_exact_with_iobinding(gemm_bundle_dir: Path) -> None:
    need("onnxruntime-cuda")
    with load(gemm_bundle_dir, backend="onnxruntime-cuda", precision="fp32") as model:
        assert model.backend == "onnxruntime-cuda"
        info = model.describe()
        assert info["providers"][0] == "CUDAExecutionProvider"
        assert info["io_binding"] is True and info["cudnn_conv_algo_search"] == "HEURISTIC"
        assert info["tf32"] is False  # fp32 artifact
        for n in (1, 5, 16):  # dynamic batch through the bound path
            batch = rt_graphs.integer_batch(n, seed=n)
            assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_ort_cuda_reduced_precision_artifacts(gemm_bundle_dir: Path, precision: str) -> None:
    need("onnxruntime-cuda")
    with load(gemm_bundle_dir, backend="onnxruntime-cuda", precision=precision) as model:
        batch = rt_graphs.integer_batch(3)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))


def test_ort_cuda_cnn_matches_cpu(cnn_onnx: Path) -> None:
    need("onnxruntime-cuda")
    batch = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    with load(cnn_onnx, backend="onnxruntime-cuda") as model:
        assert_close_logits(model.run(batch), cnn_reference(cnn_onnx, batch))


def test_ort_cuda_graph_replays_with_new_data(cnn_onnx: Path) -> None:
    """A stale input buffer or a graph replayed without the new data would repeat old outputs."""
    need("onnxruntime-cuda")
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((2, 3, 32, 32)).astype(np.float32) for _ in range(5)]
    want = [cnn_reference(cnn_onnx, b) for b in batches]
    with load(cnn_onnx, backend="onnxruntime-cuda", cuda_graph=True) as model:
        assert model.describe()["cuda_graph"] is True
        for _ in range(2):
            for batch, expected in zip(batches, want, strict=True):
                assert_close_logits(model.run(batch), expected)
        with pytest.raises(InputError, match="captured its graph for batch 2; got batch 3"):
            model.run(np.zeros((3, 3, 32, 32), np.float32))


def test_ort_cuda_concurrent_calls(gemm_bundle_dir: Path) -> None:
    need("onnxruntime-cuda")
    with load(gemm_bundle_dir, backend="onnxruntime-cuda") as model:
        check_concurrency(model)


def test_auto_prefers_a_gpu_backend(gemm_bundle_dir: Path) -> None:
    need("onnxruntime-cuda")
    with load(gemm_bundle_dir) as model:
        assert model.backend == "onnxruntime-cuda"
        assert model.precision == "fp16"  # the CUDA preference: fp16 > fp32 > int8
        assert "onnxruntime-cuda [onnx-fp16, fp16]: chosen" in model.explain()


def check_concurrency(model: Any, threads: int = 8, calls: int = 100) -> None:
    inputs = [rt_graphs.integer_batch(1 + i % 4, seed=i) for i in range(threads)]
    want = [rt_graphs.gemm_reference(x) for x in inputs]
    failures: list[str] = []

    def work(i: int) -> None:
        for call in range(calls):
            got = model.run(inputs[i])
            if not np.array_equal(got, want[i]):
                failures.append(f"thread {i} call {call}")

    threads.run_concurrently(work, threads)  # an exception in a thread fails the test too
    assert failures == []


# -- TensorRT -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trt_bundles(tmp_path_factory: pytest.TempPathFactory, cnn_card: Any) -> dict[str, Path]:
    """Engines built on this machine for the gemm model and the CNN, with their ONNX sources."""
    name = tensorrt_module_name()
    if name is None:
        pytest.skip("neither tensorrt nor tensorrt_rtx is installed")
    trt = importlib.import_module(name)
    device = probe_gpus().devices[0]
    engine_info = EngineInfo(
        flavour=name,
        version=trt.__version__,
        compute_capability=None if name == "tensorrt_rtx" else device.compute_capability,
    )
    out = {}
    for key, model, card in (
        ("gemm", rt_graphs.gemm_model(), rt_graphs.make_card(num_classes=3)),
        ("cnn", rt_graphs.small_cnn(), cnn_card),
    ):
        root = tmp_path_factory.mktemp(f"trt-{key}") / "bundle"
        try:
            out[key] = rt_engines.engine_bundle(
                root, model, card, engine_info, parity=rt_bundles.passed()
            )
        except RuntimeError as exc:
            pytest.skip(f"{name} could not build an engine here: {exc}")
    engine_file = next(out["cnn"].glob("*.engine"))
    cand = ModelFile("tensorrt", "fp32", engine_file, "tensorrt-fp32", engine=engine_info)
    reason = candidate_unavailable_reason("tensorrt", cand)
    if reason is not None:
        pytest.skip(f"this machine cannot run its own {name} engines: {reason}")
    return out


@pytest.mark.tensorrt
def test_tensorrt_exact_and_dynamic_batch(trt_bundles: dict[str, Path]) -> None:
    with load(trt_bundles["gemm"], backend="tensorrt") as model:
        assert model.backend == "tensorrt"
        assert model.batch_range == BatchRange(1, 4, 16)
        for n in (1, 4, 7, 16, 2):  # up, to the profile's max, and back down
            batch = rt_graphs.integer_batch(n, seed=n)
            assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch)), n
        with pytest.raises(InputError, match="batch size 17 is outside"):
            model.run(rt_graphs.integer_batch(17))


@pytest.mark.tensorrt
def test_tensorrt_cnn_matches_onnxruntime_cpu(trt_bundles: dict[str, Path]) -> None:
    onnx_path = trt_bundles["cnn"] / "model.fp32.onnx"
    rng = np.random.default_rng(2)
    with load(trt_bundles["cnn"], backend="tensorrt") as model:
        for n in (1, 3, 16):
            batch = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
            got = model.run(batch)
            want = cnn_reference(onnx_path, batch)
            # TensorRT may use TF32 for fp32 engines: compare top-1 and a loose bound
            assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))
            np.testing.assert_allclose(got, want, atol=2e-2 * float(np.abs(want).max()))


@pytest.mark.tensorrt
def test_tensorrt_cuda_graph_per_batch_size(trt_bundles: dict[str, Path]) -> None:
    with load(trt_bundles["gemm"], backend="tensorrt", cuda_graph=True) as model:
        for round_ in range(3):
            for n in (2, 5, 2, 16):
                batch = rt_graphs.integer_batch(n, seed=round_ * 100 + n)  # new data every call
                assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch)), (
                    round_,
                    n,
                )
        info = model.describe()
    assert info["cuda_graph"] is True, "graph capture failed and the model fell back (see log)"
    assert info["cuda_graph_batches"] == [2, 5, 16]


@pytest.mark.tensorrt
def test_tensorrt_concurrent_calls(trt_bundles: dict[str, Path]) -> None:
    with load(trt_bundles["gemm"], backend="tensorrt") as model:
        check_concurrency(model)


@pytest.mark.tensorrt
def test_tensorrt_predict_matches_cpu(
    trt_bundles: dict[str, Path], digit_images: list[Path]
) -> None:
    with (
        load(trt_bundles["gemm"], backend="tensorrt") as gpu,
        load(trt_bundles["gemm"], backend="onnxruntime-cpu") as cpu,
    ):
        assert [p.indices for p in gpu.predict(digit_images)] == [
            p.indices for p in cpu.predict(digit_images)
        ]


@pytest.mark.tensorrt
def test_tensorrt_close_releases_gpu_memory(trt_bundles: dict[str, Path]) -> None:
    from edgeport.runtime.backends.cuda import cuda_call, cudart

    runtime = cudart()

    def free_bytes() -> int:
        free, _total = cuda_call(runtime.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(free)

    with load(trt_bundles["cnn"], backend="tensorrt") as warm:  # CUDA context, TensorRT libs
        warm.run(np.zeros((16, 3, 32, 32), np.float32))
    before = free_bytes()
    for _ in range(20):
        model = load(trt_bundles["cnn"], backend="tensorrt", cuda_graph=True)
        model.run(np.zeros((16, 3, 32, 32), np.float32))
        model.close()
    leaked = before - free_bytes()
    assert leaked < 16 << 20, f"{leaked} bytes of GPU memory not returned after 20 load/close"
    with pytest.raises(ModelLoadError, match="closed"):
        model.run(np.zeros((1, 3, 32, 32), np.float32))


@pytest.mark.tensorrt
def test_auto_picks_the_engine_on_its_gpu(trt_bundles: dict[str, Path]) -> None:
    with load(trt_bundles["gemm"]) as model:
        assert model.backend == "tensorrt"
        assert model.artifact is not None and model.artifact.name == "tensorrt-fp32"
        assert "tensorrt [tensorrt-fp32, fp32]: chosen" in model.explain()
