"""``summarize`` against the article's worked arithmetic, and against known model sizes."""

from __future__ import annotations

import pytest
from torch import nn

from edgeport.runtime.errors import ConfigError
from edgeport.train.models import build_model
from edgeport.train.summary import summarize


def only_layer(module: nn.Module, shape: tuple[int, ...]) -> tuple[tuple[int, ...], int, int]:
    summary = summarize(nn.Sequential(module), shape)
    (layer,) = summary.layers
    return layer.output_shape, layer.params, layer.macs


def test_conv_5x5_kernel_3_stride_1_no_padding_gives_3x3() -> None:
    shape, params, macs = only_layer(nn.Conv2d(1, 1, 3, stride=1, padding=0), (1, 5, 5))
    assert shape == (1, 3, 3) and params == 3 * 3 + 1 and macs == 9 * 9


def test_conv_5x5_padding_1_stride_2_gives_3x3() -> None:
    shape, _, _ = only_layer(nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 5, 5))
    assert shape == (1, 3, 3)


def test_32_filters_give_32x3x3() -> None:
    shape, params, macs = only_layer(nn.Conv2d(1, 32, 3), (1, 5, 5))
    assert shape == (32, 3, 3) and params == 32 * 9 + 32 and macs == 32 * 3 * 3 * 9


def test_flatten_4x4x64_is_1024_and_fc128_has_131200_params() -> None:
    summary = summarize(nn.Sequential(nn.Flatten(), nn.Linear(1024, 128)), (64, 4, 4))
    flatten, fc = summary.layers
    assert flatten.output_shape == (1024,)
    assert fc.output_shape == (128,) and fc.params == 131_200 and fc.macs == 1024 * 128


def test_max_pool_2_stride_2_halves_each_side() -> None:
    shape, params, macs = only_layer(nn.MaxPool2d(2, 2), (64, 8, 6))
    assert shape == (64, 4, 3) and params == 0 and macs == 0


def test_simple_cnn_on_16x16_is_the_articles_network() -> None:
    summary = summarize(
        build_model("simple_cnn", num_classes=10, in_channels=1, input_size=(16, 16)), (1, 16, 16)
    )
    rows = {layer.name: layer for layer in summary.layers}
    assert rows["features.conv1"].output_shape == (32, 16, 16)
    assert rows["features.pool1"].output_shape == (32, 8, 8)
    assert rows["features.pool2"].output_shape == (64, 4, 4)
    assert rows["classifier.flatten"].output_shape == (1024,)
    assert rows["classifier.fc1"].params == 131_200
    assert summary.total_params == 320 + 18_496 + 131_200 + 1_290
    assert summary.total_macs == 16 * 16 * 32 * 9 + 8 * 8 * 64 * 32 * 9 + 1024 * 128 + 128 * 10
    assert summary.output_shape == (10,) and summary.uncounted == []
    table = summary.table()
    assert "classifier.fc1" in table and "131,200" in table and "1x16x16 -> output 10" in table


def test_resnet18_totals_match_torchvision() -> None:
    summary = summarize(
        build_model("resnet18", num_classes=1000, input_size=(224, 224)), (3, 224, 224)
    )
    assert summary.total_params == 11_689_512  # torchvision's published count
    assert 1.81e9 < summary.total_macs < 1.82e9  # the well-known 1.8 GMACs
    frozen = build_model("resnet18", num_classes=10, input_size=(32, 32), freeze_backbone=True)
    assert summarize(frozen, (3, 32, 32)).trainable_params == 5130


def test_summary_rejects_a_shape_the_model_cannot_take() -> None:
    model = build_model("simple_cnn", num_classes=10, in_channels=3, input_size=(32, 32))
    with pytest.raises(ConfigError, match="cannot take an input of shape 3x16x16"):
        summarize(model, (3, 16, 16))
