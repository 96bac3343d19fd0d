"""Every refusal of the runtime, provoked for real: the error type and what its message says."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_bundles
import rt_graphs
from onnx.external_data_helper import convert_model_to_external_data

from edgeport.runtime import load
from edgeport.runtime.backends.registry import machine_report
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    EdgeportError,
    InputError,
    ModelLoadError,
)

needs_no_ort_cuda = pytest.mark.skipif(
    machine_report()["onnxruntime-cuda"] is None, reason="onnxruntime-cuda can run here"
)


@pytest.fixture(scope="module")
def model(gemm_bundle_dir: Path) -> Any:
    with load(gemm_bundle_dir, threads=1) as opened:
        yield opened


def good(n: int = 1) -> np.ndarray:
    return np.zeros((n, 1, 2, 2), np.float32)


# -- InputError: what Model.run refuses --------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "pattern"),
    [
        (good().astype(np.float64), r"expected dtype float32, got float64 .*astype\(np\.float32\)"),
        (good().astype(np.float16), r"expected dtype float32, got float16"),
        (np.zeros((1, 1, 2, 2), np.uint8), r"expected dtype float32, got uint8.*Model\.predict"),
        (
            np.zeros((1, 2, 2), np.float32),
            r"expected a 4-D batch \(N, C, H, W\) = \(N, 1, 2, 2\), "
            r"got 3-D shape \(1, 2, 2\); add a batch axis",
        ),
        (np.zeros((4,), np.float32), r"expected a 4-D batch .* got 1-D shape \(4,\)"),
        (
            np.zeros((1, 3, 2, 2), np.float32),
            r"expected 1 channels .* got 3 in shape \(1, 3, 2, 2\)",
        ),
        (np.zeros((1, 1, 3, 2), np.float32), r"expected height x width 2x2, got 3x2"),
        (np.zeros((1, 1, 2, 5), np.float32), r"expected height x width 2x2, got 2x5"),
        (np.zeros((0, 1, 2, 2), np.float32), r"batch size 0 is outside this model's range 1\.\.16"),
        (
            np.zeros((17, 1, 2, 2), np.float32),
            r"batch size 17 is outside .* 1\.\.16 .*split the batch",
        ),
        ([[[[0.0, 0.0], [0.0, 0.0]]]], r"expects a numpy float32 array .* got list"),
    ],
)
def test_run_refuses_bad_batches(model: Any, batch: Any, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        model.run(batch)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0, 0, 0), (2, 0, 1, 1), (4, 0, 1, 0)])
def test_run_refuses_non_finite_values(model: Any, value: float, where: tuple[int, ...]) -> None:
    batch = np.ones((5, 1, 2, 2), np.float32)
    batch[where] = value
    kind = "1 NaN and 0 Inf" if np.isnan(value) else "0 NaN and 1 Inf"
    with pytest.raises(
        InputError, match=rf"expected finite values, got {kind} .*sample {where[0]}"
    ):
        model.run(batch)


def test_input_errors_are_value_errors_and_edgeport_errors(model: Any) -> None:
    with pytest.raises(ValueError) as info:
        model.run(good().astype(np.float64))
    assert isinstance(info.value, EdgeportError)


def test_predict_refuses_a_bad_top_k(model: Any) -> None:
    for top_k in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="top_k must be a positive integer"):
            model.predict(np.zeros((2, 2), np.uint8), top_k=top_k)


def test_predict_without_a_card_says_what_to_do(tmp_path: Path) -> None:
    path = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "bare.onnx")
    with (
        load(path, threads=1) as bare,
        pytest.raises(ModelLoadError, match=r"has no model card.*Model\.run"),
    ):
        bare.predict(np.zeros((2, 2), np.uint8))


def test_predict_reports_unreadable_images(model: Any, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        model.predict([broken])
    with pytest.raises(InputError, match="image file not found"):
        model.predict([tmp_path / "missing.png"])


# -- ConfigError: bad arguments to load ------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"backend": "tflite"}, r"unknown backend 'tflite'; expected 'auto' or one of"),
        ({"precision": "fp8"}, r"unknown precision 'fp8'; expected None or one of"),
        ({"device": "tpu"}, r"device must be None, 'cpu', 'cuda', 'cuda:N'"),
        ({"device": -1}, r"device index must be >= 0, got -1"),
        ({"threads": 0}, r"threads must be a positive integer or None, got 0"),
        ({"backend": "onnxruntime-cuda", "device": "cpu"}, r"runs on a GPU, but device='cpu'"),
        ({"backend": "onnxruntime-cpu", "device": "cuda:0"}, r"runs on the CPU, but a CUDA device"),
    ],
)
def test_load_refuses_bad_arguments(
    gemm_bundle_dir: Path, kwargs: dict[str, Any], pattern: str
) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load(gemm_bundle_dir, **kwargs)


def test_asking_for_a_missing_precision_lists_what_exists(tmp_path: Path) -> None:
    bundle = rt_bundles.gemm_bundle(tmp_path / "b", ("fp32", "int8"))
    with pytest.raises(ConfigError, match=r"no fp16 artifact in this bundle \(it has fp32, int8\)"):
        load(bundle, precision="fp16")


# -- ModelLoadError: missing, truncated, corrupt, tampered -----------------------------------


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no such file or directory: .*nothing"):
        load(tmp_path / "nothing")


def test_unknown_file_kind(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"expected a bundle directory .* got \.pt"):
        load(path)


def test_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"manifest\.json not found"):
        load(tmp_path)


def test_corrupt_manifest(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    (bundle / "manifest.json").write_text("{ not json")
    with pytest.raises(ModelLoadError, match=r"bundle manifest .* is invalid"):
        load(bundle)


def test_truncated_onnx_file(tmp_path: Path) -> None:
    data = rt_graphs.save(rt_graphs.small_cnn(), tmp_path / "full.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load(cut)


def test_corrupt_and_empty_onnx_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x09" + os.urandom(200))
    with pytest.raises(
        ModelLoadError, match=r"truncated or corrupt|holds no ONNX graph|cannot load"
    ):
        load(corrupt)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="is empty"):
        load(empty)


def test_sha256_mismatch_in_a_bundle(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    path = bundle / "model.fp32.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(
        ModelLoadError, match=r"artifact 'onnx-fp32' .* has sha256 .* the manifest says"
    ):
        load(bundle)
    with load(bundle, verify=False, precision="fp16", threads=1) as model:  # the others are fine
        assert model.precision == "fp16"


def test_truncated_artifact_in_a_bundle(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    path = bundle / "model.fp32.onnx"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ModelLoadError, match=r"has 50 bytes, the manifest says .* truncated"):
        load(bundle)


def test_missing_artifact_in_a_bundle(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    (bundle / "model.fp32.onnx").unlink()
    with pytest.raises(ModelLoadError, match="artifact 'onnx-fp32' is missing"):
        load(bundle)
    with pytest.raises(ModelLoadError, match="artifact 'onnx-fp32' is missing"):
        load(bundle, verify=False)


def test_manifest_that_disagrees_with_the_file(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")

    def rename_input(data: dict[str, Any]) -> None:
        data["artifacts"][0]["inputs"][0]["name"] = "images"

    rt_bundles.rewrite_manifest(bundle, rename_input)
    with pytest.raises(
        ModelLoadError, match=r"the manifest names inputs \['images'\], the file has \['input'\]"
    ):
        load(bundle, verify=False)


def test_card_that_disagrees_with_the_file(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")

    def bigger_input(data: dict[str, Any]) -> None:
        data["card"]["input_size"] = [3, 3]

    rt_bundles.rewrite_manifest(bundle, bigger_input)
    with pytest.raises(
        ModelLoadError, match=r"the file's input has height 2, the model card says 3"
    ):
        load(bundle)

    def more_classes(data: dict[str, Any]) -> None:
        data["card"]["input_size"] = [2, 2]
        data["card"]["num_classes"] = 4
        data["card"]["class_names"] = ["a", "b", "c", "d"]

    rt_bundles.rewrite_manifest(bundle, more_classes)
    with pytest.raises(ModelLoadError, match=r"the file outputs 3 classes, the model card lists 4"):
        load(bundle)


def test_manifest_batch_range_beyond_a_fixed_batch_file(tmp_path: Path) -> None:
    root = tmp_path / "b"
    rt_graphs.save(rt_graphs.gemm_model(batch=1), root / "model.fp32.onnx")
    art = rt_bundles.artifact_for(
        root, "model.fp32.onnx", name="onnx-fp32", precision="fp32", chw=(1, 2, 2)
    )
    Manifest(card=rt_graphs.make_card(num_classes=3), artifacts=(art,)).save(root)
    with pytest.raises(
        ModelLoadError,
        match=r"input 'input' axis 0: the manifest's range 1\.\.16 is not within what the file "
        r"accepts \(1\.\.1\)",
    ):
        load(root)


def test_invalid_card_in_onnx_metadata(tmp_path: Path) -> None:
    path = rt_graphs.save(
        rt_graphs.gemm_model(metadata={"edgeport.card": '{"architecture": "x"}'}),
        tmp_path / "m.onnx",
    )
    with pytest.raises(
        ModelLoadError, match=r"the embedded model card is invalid: .*needs its class names"
    ):
        load(path)


def external_model(tmp_path: Path, location: str) -> Path:
    """A gemm model whose weights live in external data at ``location`` (written relative to the
    model's directory by the onnx package, then the reference rewritten as given)."""
    model = rt_graphs.gemm_model()
    convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    path = tmp_path / "model" / "m.onnx"
    rt_graphs.save(model, path)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    import onnx

    onnx.save(model, str(path), save_as_external_data=False)
    return path


@pytest.mark.parametrize("location", ["weights.bin", "sub/weights.bin"])
@pytest.mark.parametrize("backend", ["onnxruntime-cpu", "openvino"])
def test_external_data_inside_the_directory_loads(
    tmp_path: Path, backend: str, location: str
) -> None:
    """The model's bytes go to the engine from memory; its external data is found beside it."""
    if backend == "openvino":
        pytest.importorskip("openvino")
    path = external_model(tmp_path, location)
    if location != "weights.bin":
        (path.parent / "sub").mkdir()
        (path.parent / "weights.bin").rename(path.parent / location)
    with load(path, backend=backend, threads=1) as model:
        batch = np.ones((1, 1, 2, 2), np.float32)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
        if backend == "openvino":  # its weights are not in a cache key: never cached
            assert model.describe()["compiled_cache"] == "off"


def test_verified_external_data_is_not_compiled_by_openvino_from_its_path(tmp_path: Path) -> None:
    """OpenVINO reads external data only through the model's path, which could differ from the
    bytes verified; auto runs the artifact on ONNX Runtime from the verified bytes instead."""
    pytest.importorskip("openvino")
    path = external_model(tmp_path, "weights.bin")
    art = rt_bundles.artifact_for(
        path.parent, path.name, name="onnx-fp32", precision="fp32", chw=(1, 2, 2)
    )
    Manifest(card=rt_graphs.make_card(num_classes=3), artifacts=(art,)).save(path.parent)
    with pytest.raises(BackendUnavailable, match="openvino cannot compile the verified bytes"):
        load(path.parent, backend="openvino")
    with load(path.parent, threads=1) as model:
        assert model.backend == "onnxruntime-cpu"


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"])
def test_external_data_outside_the_directory_is_refused(tmp_path: Path, location: str) -> None:
    path = external_model(tmp_path, location)
    (tmp_path / "outside.bin").write_bytes((path.parent / "weights.bin").read_bytes())
    with pytest.raises(ModelLoadError, match=r"external data at .* points outside .*refusing"):
        load(path)


def test_external_data_through_a_symlink_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    path = external_model(tmp_path, "link.bin")
    (tmp_path / "outside.bin").write_bytes((path.parent / "weights.bin").read_bytes())
    (path.parent / "link.bin").symlink_to(tmp_path / "outside.bin")
    with pytest.raises(ModelLoadError, match="points outside"):
        load(path)


def test_missing_external_data(tmp_path: Path) -> None:
    path = external_model(tmp_path, "weights.bin")
    (path.parent / "weights.bin").unlink()
    with pytest.raises(
        ModelLoadError, match=r"needs its external data file 'weights.bin', which is missing"
    ):
        load(path)


def test_external_data_leaving_a_bundle_is_refused(tmp_path: Path) -> None:
    src = external_model(tmp_path, "../outside.bin")
    (tmp_path / "outside.bin").write_bytes((src.parent / "weights.bin").read_bytes())
    root = src.parent
    art = rt_bundles.artifact_for(root, "m.onnx", name="onnx-fp32", precision="fp32", chw=(1, 2, 2))
    Manifest(card=rt_graphs.make_card(num_classes=3), artifacts=(art,)).save(root)
    with pytest.raises(ModelLoadError, match="points outside"):
        load(root)


# -- BackendUnavailable: a backend this machine cannot run ------------------------------------


@needs_no_ort_cuda
def test_cuda_backend_without_cuda_names_the_extra(gemm_bundle_dir: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        load(gemm_bundle_dir, backend="onnxruntime-cuda")
    message = str(info.value)
    assert "no backend can run" in message
    assert "onnxruntime-cuda: skipped:" in message
    assert "pip install 'edgeport-runtime[gpu]'" in message or "no NVIDIA GPU" in message


@needs_no_ort_cuda
def test_device_cuda_without_a_gpu_backend_explains_each(gemm_bundle_dir: Path) -> None:
    with pytest.raises(
        BackendUnavailable, match=r"tensorrt: skipped: no tensorrt artifact"
    ) as info:
        load(gemm_bundle_dir, device="cuda")
    assert "onnxruntime-cuda: skipped" in str(info.value)
