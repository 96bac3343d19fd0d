"""The model registry: shapes, names, adaptation of torchvision models, local ImageNet weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, ModelLoadError
from edgeport.train import models
from edgeport.train.models import (
    available_models,
    build_model,
    build_model_from_card,
    default_input_size,
    register_model,
)


def n_params(model: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def test_registry_names() -> None:
    assert available_models() == ["resnet18", "simple_cnn", "simple_cnn_bn", "simple_cnn_dropout"]
    with_tv = available_models(include_torchvision=True)
    assert "torchvision:mobilenet_v3_small" in with_tv and "torchvision:resnet50" in with_tv
    assert not any(n.startswith("torchvision:fasterrcnn") for n in with_tv)  # detection excluded


@pytest.mark.parametrize("name", ["simple_cnn", "simple_cnn_dropout", "simple_cnn_bn"])
@pytest.mark.parametrize(
    ("channels", "size"), [(1, (32, 32)), (3, (32, 32)), (3, (28, 44)), (1, (4, 4))]
)
def test_simple_cnns_take_any_shape(name: str, channels: int, size: tuple[int, int]) -> None:
    model = build_model(name, num_classes=7, in_channels=channels, input_size=size).eval()
    assert model(torch.zeros(2, channels, *size)).shape == (2, 7)
    assert model.classifier.fc1.in_features == 64 * (size[0] // 4) * (size[1] // 4)


def test_article_cnn_layers() -> None:
    plain = build_model("simple_cnn", num_classes=10, in_channels=3, input_size=(32, 32))
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (3, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
    ]
    assert plain.classifier.fc1.in_features == 64 * 8 * 8  # the article's 64*8*8, computed
    assert [m.out_features for m in plain.modules() if isinstance(m, nn.Linear)] == [128, 10]
    assert not any(isinstance(m, nn.Dropout | nn.BatchNorm2d) for m in plain.modules())

    dropout = build_model("simple_cnn_dropout", num_classes=10)
    names = list(dropout.classifier._modules)
    assert names[-2:] == ["dropout", "fc2"] and dropout.classifier.dropout.p == 0.5

    bn = build_model("simple_cnn_bn", num_classes=10)
    assert list(bn.features._modules) == [
        "conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2",
    ]  # fmt: skip
    assert bn.features.conv1.bias is None  # BatchNorm makes the conv bias redundant


def test_arch_args_and_bad_shapes() -> None:
    model = build_model("simple_cnn", num_classes=3, hidden=16, dropout=0.25)
    assert model.classifier.fc1.out_features == 16 and model.classifier.dropout.p == 0.25
    with pytest.raises(ConfigError, match=r"at least 4x4; got 3x8"):
        build_model("simple_cnn", num_classes=3, input_size=(3, 8))
    with pytest.raises(ConfigError, match=r"in_channels must be 1 .* or 3 .*, got 2"):
        build_model("simple_cnn", num_classes=3, in_channels=2)
    with pytest.raises(ConfigError, match="num_classes must be a positive integer, got 0"):
        build_model("simple_cnn", num_classes=0)
    with pytest.raises(ConfigError, match=r"bad arguments for model 'simple_cnn'.*colour"):
        build_model("simple_cnn", num_classes=3, colour="red")


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("simple_cnnn", num_classes=10)
    message = str(info.value)
    assert "unknown model 'simple_cnnn'" in message
    for name in available_models():
        assert name in message
    assert "torchvision:" in message
    with pytest.raises(ConfigError) as tv_info:
        build_model("torchvision:mobilenet_v9", num_classes=10)
    assert "unknown torchvision classification model 'mobilenet_v9'" in str(tv_info.value)
    assert "mobilenet_v3_small" in str(tv_info.value) and "resnet18" in str(tv_info.value)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        default_input_size("nope")


def test_default_input_sizes() -> None:
    assert default_input_size("simple_cnn") == (32, 32)
    assert default_input_size("resnet18") == (224, 224)
    assert default_input_size("torchvision:inception_v3") == (299, 299)
    assert default_input_size("torchvision:mobilenet_v3_small") == (224, 224)


def test_registry_warns_on_collision() -> None:
    try:
        with pytest.warns(UserWarning, match="model 'simple_cnn' is registered twice"):

            @register_model("simple_cnn")
            def replacement(**kwargs: object) -> nn.Module:
                return nn.Identity()

        assert isinstance(build_model("simple_cnn", num_classes=2), nn.Identity)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            register_model("simple_cnn", description="the article's CNN")(models.simple_cnn)
    assert isinstance(build_model("simple_cnn", num_classes=2), models.SimpleCNN)


def test_resnet18_head_channels_and_freeze() -> None:
    grey = build_model("resnet18", num_classes=10, in_channels=1, input_size=(32, 32))
    assert grey.conv1.in_channels == 1 and grey.fc.out_features == 10
    assert grey.eval()(torch.zeros(2, 1, 32, 32)).shape == (2, 10)

    frozen = build_model(
        "resnet18", num_classes=4, in_channels=3, input_size=(32, 32), freeze_backbone=True
    )
    trainable = [n for n, p in frozen.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    assert n_params(frozen, trainable=True) == 512 * 4 + 4

    cnn = build_model("simple_cnn", num_classes=10, freeze_backbone=True)
    assert {n.split(".")[0] for n, p in cnn.named_parameters() if p.requires_grad} == {"classifier"}


def test_torchvision_models_adapt() -> None:
    model = build_model(
        "torchvision:mobilenet_v3_small", num_classes=5, in_channels=1, input_size=(64, 64)
    )
    assert model.eval()(torch.zeros(1, 1, 64, 64)).shape == (1, 5)
    squeeze = build_model("torchvision:squeezenet1_1", num_classes=3, input_size=(64, 64))
    assert squeeze.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 3)
    with pytest.raises(ConfigError, match=r"torchvision:inception_v3 cannot take a 3x32x32 input"):
        build_model("torchvision:inception_v3", num_classes=3, input_size=(32, 32))


@pytest.fixture(scope="module")
def imagenet_like_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real ResNet-18 ImageNet-shaped state dict (1000 classes, seeded) as both file kinds."""
    import torchvision

    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    folder = tmp_path_factory.mktemp("imagenet")
    st_path, pth_path = folder / "resnet18.safetensors", folder / "resnet18.pth"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st_path))
    torch.save({"state_dict": state}, pth_path)
    return {"safetensors": st_path, "pth": pth_path}


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_resnet18_loads_local_imagenet_weights(
    imagenet_like_weights: dict[str, Path], kind: str
) -> None:
    import torchvision

    path = imagenet_like_weights[kind]
    rgb = build_model("resnet18", num_classes=10, in_channels=3, input_size=(64, 64), weights=path)
    reference = torchvision.models.resnet18(weights=None)
    reference.load_state_dict(
        torch.load(imagenet_like_weights["pth"], weights_only=True)["state_dict"]
    )
    assert torch.equal(rgb.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert torch.equal(rgb.conv1.weight, reference.conv1.weight)
    assert rgb.fc.out_features == 10

    # A grey first conv sums the RGB kernels: grey image on 1 channel == replicated on 3.
    grey = build_model("resnet18", num_classes=10, in_channels=1, input_size=(64, 64), weights=path)
    grey.fc = rgb.fc
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        np_grey = grey.eval()(image)
        np_rgb = rgb.eval()(image.repeat(1, 3, 1, 1))
    torch.testing.assert_close(np_grey, np_rgb, atol=1e-4, rtol=1e-4)


def test_weights_errors_name_the_file(
    tmp_path: Path, imagenet_like_weights: dict[str, Path]
) -> None:
    missing = tmp_path / "absent.safetensors"
    with pytest.raises(ModelLoadError, match=f"weights file not found: {missing}.*never downloads"):
        build_model("resnet18", num_classes=10, weights=missing)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(imagenet_like_weights["safetensors"].read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match=f"{corrupt} is not a readable safetensors file"):
        build_model("resnet18", num_classes=10, weights=corrupt)
    other = tmp_path / "cnn.safetensors"
    save_file(build_model("simple_cnn", num_classes=10).state_dict(), str(other))
    with pytest.raises(ModelLoadError, match=f"weights file {other} does not match"):
        build_model("resnet18", num_classes=10, weights=other)
    pickled = tmp_path / "object.pth"
    torch.save({"model": nn.Linear(2, 2)}, pickled)  # a whole module: refused by weights_only
    with pytest.raises(ModelLoadError, match=f"weights file {pickled} could not be read"):
        build_model("resnet18", num_classes=10, weights=pickled)
    with pytest.raises(ConfigError, match="'simple_cnn' has no pretrained weights"):
        build_model("simple_cnn", num_classes=10, weights=other)


def test_build_model_from_card_uses_arch_args() -> None:
    card = ModelCard(
        architecture="simple_cnn_dropout",
        num_classes=4,
        class_names=("a", "b", "c", "d"),
        in_channels=1,
        input_size=(20, 24),
        mean=(0.5,),
        std=(0.5,),
        arch_args={"hidden": 32},
    )
    model = build_model_from_card(card)
    assert not model.training
    assert model.classifier.fc1.in_features == 64 * 5 * 6
    assert model.classifier.fc1.out_features == 32
    assert model(torch.zeros(1, 1, 20, 24)).shape == (1, 4)


def test_training_from_local_weights_uses_imagenet_statistics(
    imagenet_like_weights: dict[str, Path], tmp_path: Path
) -> None:
    from edgeport.train.loop import TrainConfig, train

    run = train(
        TrainConfig(
            model="resnet18", data="digits", epochs=1, limit=64, augment=False,
            weights=imagenet_like_weights["safetensors"], freeze_backbone=True,
            out=tmp_path / "run", progress=False,
        )
    )  # fmt: skip
    card = ModelCard.load(run / "card.json")
    assert (card.mean, card.std, card.in_channels) == ((0.449,), (0.226,), 1)
    assert card.arch_args == {}  # the weights path is a build option, not architecture
    from edgeport.train.checkpoint import load_checkpoint

    loaded = load_checkpoint(run).model  # rebuilt without the weights file
    reference = build_model("resnet18", num_classes=10, in_channels=1, input_size=(32, 32),
                            weights=imagenet_like_weights["pth"])  # fmt: skip
    # The backbone was frozen, so it still holds the file's (grey-adapted) weights.
    assert torch.equal(loaded.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert torch.equal(loaded.conv1.weight, reference.conv1.weight)


@pytest.mark.slow
def test_every_torchvision_classifier_has_an_input_size_probe() -> None:
    """Each classifier `edgeport summary --list` names is probed at its default size: on the
    meta device, or (RegNets, built from tensor arithmetic) on fake tensors once built."""
    import torchvision

    from edgeport.train.models import _check_input_size, default_input_size

    deferred = []
    for name in torchvision.models.list_models(module=torchvision.models):
        size = default_input_size(f"torchvision:{name}")
        kwargs = {"image_size": size[0]} if name.startswith("vit_") else {}
        if name in ("inception_v3", "googlenet"):
            kwargs = {"aux_logits": False, "init_weights": True}
        if not _check_input_size(name, 3, size, kwargs):
            deferred.append(name)
    assert deferred and all(name.startswith("regnet_") for name in deferred)
    model = build_model("torchvision:regnet_x_400mf", num_classes=3, input_size=(32, 32))
    assert model.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
