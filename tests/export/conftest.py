"""Fixtures for the export unit tests: a small CNN trained on real digits, and its ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from export_helpers import digits_card, export_classifier
from torch import nn

from edgeport.export.onnx import DEFAULT_OPSET, save_model, set_metadata
from edgeport.runtime.card import ModelCard
from edgeport.train.data import load_eval_arrays
from edgeport.train.models import build_model


@pytest.fixture(scope="session")
def cnn() -> tuple[nn.Module, ModelCard]:
    """simple_cnn_bn trained for a few seconds on real digits (seeded)."""
    torch.manual_seed(0)
    card = digits_card()
    model = build_model("simple_cnn_bn", num_classes=10, in_channels=1, input_size=(16, 16))
    train = load_eval_arrays("digits", card, split="train")
    images, labels = torch.from_numpy(train.images), torch.from_numpy(train.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _epoch in range(3):
        for idx in torch.randperm(len(images)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[idx]), labels[idx]).backward()
            optimizer.step()
    return model.eval(), card


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    arrays = load_eval_arrays("digits", digits_card(), split="test", limit=64)
    return arrays.images, arrays.labels


@pytest.fixture(scope="session")
def fp32_onnx(cnn: tuple[nn.Module, ModelCard], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, card = cnn
    path = tmp_path_factory.mktemp("onnx") / "model.fp32.onnx"
    graph = export_classifier(model, card)
    assert graph.info.opset == DEFAULT_OPSET and graph.info.simplified
    set_metadata(graph.model, card, "fp32")
    save_model(graph.model, path)
    return path


@pytest.fixture(scope="session")
def onnx_set(fp32_onnx: Path) -> dict[str, Path]:
    """fp32, fp16 and int8 ONNX files of the small CNN for TensorRT's builder (int8: the
    tensorrt recipe, calibrated on real digits)."""
    from edgeport.export.onnx import convert_fp16
    from edgeport.export.quantize import quantize_int8

    card = digits_card()
    paths = {"fp32": fp32_onnx, "fp16": fp32_onnx.with_name("model.fp16.onnx")}
    convert_fp16(fp32_onnx, paths["fp16"], card)
    paths["int8"] = fp32_onnx.with_name("model.int8.tensorrt.onnx")
    calib = load_eval_arrays("digits", card, split="train", limit=128).images
    quantize_int8(fp32_onnx, paths["int8"], card, [{"input": calib}], target="tensorrt")
    return paths
