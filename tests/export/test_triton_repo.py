"""Triton model repositories from bundles: every config.pbtxt parses with Triton's own model
configuration protobuf (tritonclient's model_config_pb2, text format) and says what the
artifact is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import rt_bundles
import rt_graphs

from edgeport.export.triton import TritonSettings, write_repository
from edgeport.runtime.errors import ConfigError

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] parses Triton configs"
)


def parse(path: Path) -> Any:
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_a_classifier_bundle_becomes_one_model_per_artifact(tmp_path: Path) -> None:
    bundle = rt_bundles.gemm_bundle(tmp_path / "digits", ("fp32", "fp16", "int8"))
    written = write_repository(bundle, tmp_path / "repo", TritonSettings(instances=2))
    assert [p.name for p in written] == ["digits-onnx-fp32", "digits-onnx-fp16", "digits-onnx-int8"]
    for model_dir in written:
        config = parse(model_dir / "config.pbtxt")
        assert config.name == model_dir.name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 16  # the bundle's batch range 1:4:16
        (image,) = config.input
        assert (image.name, list(image.dims)) == ("input", [1, 2, 2])
        assert model_config_pb2.DataType.Name(image.data_type) == "TYPE_FP32"
        (logits,) = config.output
        assert list(logits.dims) == [-1]  # the class axis is not fixed in this manifest
        assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
        assert config.instance_group[0].count == 2
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert (model_dir / "1" / "model.onnx").read_bytes() == (
            bundle / f"model.{model_dir.name.rsplit('-', 1)[1]}.onnx"
        ).read_bytes()


def test_int64_and_bool_tensors_on_a_shared_batch_axis(tmp_path: Path) -> None:
    import numpy as np

    from edgeport.runtime import load
    from edgeport.runtime.card import ModelCard

    model = rt_graphs.token_model()
    feeds = {"ids": np.array([[1, 2, 3], [4, 5, 6]], np.int64), "mask": np.ones((2, 3), bool)}
    with load(rt_graphs.save(model, tmp_path / "t.onnx"), threads=1) as opened:
        outputs = opened.infer(feeds)
    card = ModelCard(architecture="tokens", task="other")
    bundle = rt_bundles.any_bundle(
        tmp_path / "tokens", {"fp32": model}, card, feeds, outputs, batch=(1, 4, 8)
    )
    (model_dir,) = write_repository(bundle, tmp_path / "repo")
    config = parse(model_dir / "config.pbtxt")
    tensors = {t.name: t for t in (*config.input, *config.output)}
    types = {name: model_config_pb2.DataType.Name(t.data_type) for name, t in tensors.items()}
    assert types == {
        "ids": "TYPE_INT64",
        "mask": "TYPE_BOOL",
        "hidden": "TYPE_FP32",
        "count": "TYPE_INT64",
        "kept": "TYPE_BOOL",
    }
    assert config.max_batch_size == 8  # every tensor starts with "batch": Triton batches it
    assert list(tensors["ids"].dims) == [-1] and list(tensors["hidden"].dims) == [-1, 4]
    assert list(tensors["count"].dims) == []


def test_failed_artifacts_are_left_out_and_models_replaced_whole(tmp_path: Path) -> None:
    bundle = rt_bundles.gemm_bundle(
        tmp_path / "b", ("fp32", "int8"), parity={"int8": rt_bundles.passed(False)}
    )
    repo = tmp_path / "repo"
    (first,) = write_repository(bundle, repo, TritonSettings(name="gemm"))
    assert first.name == "gemm-onnx-fp32"
    (again,) = write_repository(bundle, repo, TritonSettings(name="gemm"))
    assert again == first and sorted(p.name for p in repo.iterdir()) == ["gemm-onnx-fp32"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        write_repository(bundle, tmp_path / "file")
