"""``summarize`` against the article's worked arithmetic, and against known model sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.ops import DeformConv2d

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
    # torchvision publishes 1.814 GMACs; the hand-written counter this replaced gave exactly this
    assert summary.total_macs == 1_814_073_344 == sum(layer.macs for layer in summary.layers)
    assert "(1.81 G) per image" in summary.table()
    frozen = build_model("resnet18", num_classes=10, input_size=(32, 32), freeze_backbone=True)
    assert summarize(frozen, (3, 32, 32)).trainable_params == 5130


def test_summary_rejects_a_shape_the_model_cannot_take() -> None:
    model = build_model("simple_cnn", num_classes=10, in_channels=3, input_size=(32, 32))
    with pytest.raises(ConfigError, match="cannot take an input of shape 3x16x16"):
        summarize(model, (3, 16, 16))


def hand_count(module: nn.Module, output_shape: tuple[int, ...]) -> int:
    """The MACs the previous hand-written counter gave one layer (kept here as the reference)."""
    elements = math.prod(output_shape)
    if isinstance(module, nn.Conv2d):
        return elements * module.in_channels // module.groups * math.prod(module.kernel_size)
    return elements * module.in_features if isinstance(module, nn.Linear) else 0


@pytest.mark.parametrize(
    ("name", "shape", "total"),
    [  # totals of the hand-written counter this module replaced
        ("simple_cnn", (1, 32, 32), 5_539_072),
        ("simple_cnn_dropout", (3, 32, 32), 6_128_896),
        ("simple_cnn_bn", (3, 32, 32), 6_128_896),
        ("simple_cnn_bn", (1, 28, 20), 3_029_760),
    ],
)
def test_simple_cnns_match_the_hand_count(
    name: str, shape: tuple[int, int, int], total: int
) -> None:
    model = build_model(name, num_classes=10, in_channels=shape[0], input_size=shape[1:])
    summary = summarize(model, shape)
    assert summary.total_macs == total == sum(layer.macs for layer in summary.layers)
    modules = dict(model.named_modules())
    assert [layer.name for layer in summary.layers] == [
        n for n, m in modules.items() if n and next(m.children(), None) is None
    ]
    for layer in summary.layers:
        assert layer.macs == hand_count(modules[layer.name], layer.output_shape), layer.name


def test_attention_is_counted_in_its_own_row() -> None:
    layer = nn.TransformerEncoderLayer(8, nhead=2, dim_feedforward=16, batch_first=True)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    summary = summarize(layer, (4, 8))  # 4 tokens of width 8
    assert torch.backends.mha.get_fastpath_enabled() == fastpath
    rows = {row.name: row for row in summary.layers}
    # in_proj 4*8*24, scores and weighted sum 2 * 2 heads * 4*4*4, out_proj 4*8*8
    assert rows["self_attn"].kind == "MultiheadAttention"
    assert rows["self_attn"].macs == 768 + 256 + 256 and rows["self_attn"].output_shape == (4, 8)
    assert rows["linear1"].macs == rows["linear2"].macs == 4 * 8 * 16
    assert summary.total_macs == 2304 == sum(row.macs for row in summary.layers)
    assert summary.uncounted == []


class _DeformBlock(nn.Module):
    """A deformable convolution: torchvision's operator has no FLOP formula."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = nn.Conv2d(1, 18, 3, padding=1)
        self.deform = DeformConv2d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deform(x, self.offset(x))


def test_a_layer_without_flop_formula_is_named_uncounted() -> None:
    summary = summarize(_DeformBlock(), (1, 8, 8))
    assert summary.uncounted == ["DeformConv2d"]
    assert summary.total_macs == 8 * 8 * 18 * 9  # the offset convolution alone
    assert "MACs not counted inside: DeformConv2d" in summary.table()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_transformers_match_torchvisions_published_ops(name: str) -> None:
    import torchvision

    published = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]  # GMACs
    model = build_model(f"torchvision:{name}", num_classes=1000, input_size=(224, 224))
    summary = summarize(model, (3, 224, 224))
    assert summary.total_macs / 1e9 == pytest.approx(published, abs=1e-3)
    assert summary.total_macs == sum(layer.macs for layer in summary.layers)
    assert summary.uncounted == []
