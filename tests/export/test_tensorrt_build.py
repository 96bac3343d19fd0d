"""Real TensorRT(-RTX) engine builds from the ONNX artifacts (RTX builds on the CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from export_helpers import session

from edgeport.export.onnx import INPUT_NAME
from edgeport.export.tensorrt import (
    RTX_PORTABLE,
    build_engine,
    engine_runnable_here,
    import_tensorrt,
)
from edgeport.runtime.backends.tensorrt import check_plan
from edgeport.runtime.errors import BackendUnavailable, ConfigError, ExportError

pytestmark = [pytest.mark.tensorrt, pytest.mark.slow]


def batch_profile(low: int, opt: int, high: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """The digits CNN's input [batch, 1, 16, 16] with the batch in low..high."""
    return {INPUT_NAME: tuple((b, 1, 16, 16) for b in (low, opt, high))}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_for_each_precision(
    onnx_set: dict[str, Path], tmp_path: Path, precision: str
) -> None:
    trt = import_tensorrt()
    cache = tmp_path / "timing.cache"
    engine = tmp_path / f"model.{precision}.engine"
    build = build_engine(
        onnx_set[precision], engine, profiles=batch_profile(1, 4, 16), timing_cache=cache
    )
    data = engine.read_bytes()
    assert build.size_bytes == len(data) > 10_000
    assert build.build_seconds > 0
    info = build.info
    assert info.version == trt.__version__ and info.workspace_bytes == 1 << 30
    if info.flavour == "tensorrt_rtx":
        assert info.compute_capability is None  # AOT build, portable across RTX GPUs
        assert info.hardware_compatibility == RTX_PORTABLE
        assert info.timing_cache is None and not cache.exists()  # RTX ignores timing caches
    else:
        assert info.timing_cache == "timing.cache" and cache.stat().st_size > 0
    # the plan is a raw serialized engine that TensorRT's own runtime reads as well formed
    validity = check_plan(engine, info.flavour)
    if validity.state != "unknown":  # the library can judge plans (TensorRT-RTX)
        assert not {"MALFORMED_ENGINE", "VERSION_MISMATCH"} & set(validity.problems)
        garbage = tmp_path / "garbage.engine"
        garbage.write_bytes(b"x" * len(data))
        assert check_plan(garbage, info.flavour).malformed
    # the cache is reused by the next build, and stays a valid cache
    again = build_engine(
        onnx_set[precision],
        tmp_path / "again.engine",
        profiles=batch_profile(1, 4, 16),
        timing_cache=cache,
    )
    assert again.size_bytes > 10_000


def test_parser_errors_are_listed(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mystery", ["input"], ["logits"], domain="com.example")],
        "unsupported",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, 4, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)]
    )
    path = tmp_path / "mystery.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ExportError, match=r"parser rejected mystery\.onnx: .*Mystery"):
        build_engine(path, tmp_path / "x.engine", profiles=batch_profile(1, 1, 1))
    assert not (tmp_path / "x.engine").exists()
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(ExportError, match=r"found no layers in garbage\.onnx"):
        build_engine(garbage, tmp_path / "y.engine", profiles=batch_profile(1, 1, 1))


def test_profile_must_fit_the_network(onnx_set: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(
        ExportError, match=r"has inputs \['input'\], the engine profile gives .*'ids'"
    ):
        build_engine(onnx_set["fp32"], tmp_path / "x.engine", profiles={"ids": ((1,), (1,), (1,))})
    wrong = {INPUT_NAME: tuple((b, 3, 16, 16) for b in (1, 2, 4))}
    with pytest.raises(ExportError, match=r"profile shape \[1, 3, 16, 16\] does not fit input"):
        build_engine(onnx_set["fp32"], tmp_path / "x.engine", profiles=wrong)
    assert not (tmp_path / "x.engine").exists()


def test_bad_settings_are_refused(onnx_set: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workspace must be at least 1 MiB"):
        build_engine(
            onnx_set["fp32"],
            tmp_path / "x.engine",
            profiles=batch_profile(1, 1, 1),
            workspace_bytes=10,
        )
    with pytest.raises(ConfigError, match="flavour must be one of"):
        import_tensorrt("tensorflow")


def test_engines_are_gated_only_where_the_runtime_runs_them(
    onnx_set: dict[str, Path], digits: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    from _env import cuda_gpu_reason

    from edgeport.runtime import load

    engine = tmp_path / "e.engine"
    build = build_engine(onnx_set["fp32"], engine, profiles=batch_profile(1, 1, 2))
    reason = engine_runnable_here(engine, build.info)
    if cuda_gpu_reason() is not None:
        assert reason is not None and "GPU" in reason
    if reason is None:  # runnable here: the runtime must run it like the ONNX it came from
        images = digits[0][:2]
        expected = session(onnx_set["fp32"]).run(None, {INPUT_NAME: images})[0]
        with load(engine, backend="tensorrt") as model:
            np.testing.assert_allclose(model.run(images), expected, atol=1e-2)
    else:
        assert build.info.flavour in reason or "GPU" in reason or "cuda" in reason


def test_missing_flavour_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'edgeport-export\[tensorrt-rtx\]'"):
        import_tensorrt()
