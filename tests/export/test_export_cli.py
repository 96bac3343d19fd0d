"""``edgeport export`` forms and their refusals: each bad input gets one clear message and
leaves nothing behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from export_helpers import leftovers, run_cli

from edgeport.export.cli import parse_input
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with the user's own model files, as the working directory."""
    (tmp_path / "raising_models.py").write_text(
        "def build():\n    raise RuntimeError('weights server unreachable')\n"
        "def not_a_module():\n    return 42\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the factory loader adds the cwd
    return tmp_path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--module", "no_such_models:build"], "cannot import 'no_such_models' (--module "),
        (["--module", "raising_models:missing"], "has no function 'missing'"),
        (
            ["--module", "raising_models:build"],
            "the factory raising_models:build raised RuntimeError: weights server unreachable",
        ),
        (["--module", "raising_models:not_a_module"], "returned int; it must return a torch.nn"),
        (["--module", "raising_models"], "--module expects PKG.MODULE:FACTORY"),
        (["--module", "x:y", "torchvision:resnet18"], "give either SOURCE"),
        ([], "nothing to export"),
        (["torchvision:resnet18", "--input", "x:1x3"], "--input cannot be used when exporting"),
        (
            ["torchvision:resnet18", "--calib-data", "digits"],
            "--module, torchvision and ONNX models",
        ),
        (
            ["torchvision:resnet18", "--weights", "resnet18.pth"],
            "read from .safetensors only (never unpickled)",
        ),
        (["torchvision:no_such_net"], "unknown or unsupported torchvision model 'no_such_net'"),
        (
            ["torchvision:ssdlite320_mobilenet_v3_large", "--image-size", "512"],
            "takes 320x320 images only",
        ),
        (["torchvision:resnet18", "--image-size", "big"], "--image-size expects H or HxW"),
    ],
)
def test_bad_forms_are_refused_with_what_to_do(
    user_dir: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    out = user_dir / "bundle"
    code, err = run_cli([*flags, "--out", str(out)], capsys)
    assert code == 1
    assert message in err, err
    assert "Traceback" not in err
    assert not out.exists() and leftovers(out) == []


def test_int8_of_a_torchvision_model_needs_calibration_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"
    flags = ["--precision", "int8", "--image-size", "32", "--num-classes", "3"]
    code, err = run_cli(["torchvision:squeezenet1_0", *flags, "--out", str(out)], capsys)
    assert code == 1
    assert "int8 needs calibration data" in err and "--calib-data FILE.npz" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("image", "expects NAME:SHAPE[:DTYPE]"),
        ("image:1x3:float8", "expects NAME:SHAPE[:DTYPE]"),
        ("image:1xx3", "expected dimensions like 1x3x224x224"),
        ("image:", "needs a leading sample axis"),
        ("a:1:int64:x", "expects NAME:SHAPE[:DTYPE]"),
    ],
)
def test_malformed_input_flags_are_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_input(text)


def test_input_flags_give_named_specs() -> None:
    spec = parse_input("ids:2x16:int64")
    assert (spec.name, spec.dtype, spec.shape) == ("ids", "int64", (2, 16))
    assert parse_input("image:1x3x8x8").dtype == "float32"


def test_module_without_inputs_says_how_to_describe_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    here = str(Path(__file__).parent)
    code, err = run_cli(
        ["--module", "export_models:two_input", "--out", str(tmp_path / "b")], capsys
    )
    assert code == 1 and here in sys.path  # export_models is importable from the tests
    assert "returns no example inputs: describe each input with --input" in err


def test_help_lists_the_new_forms(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    for flag in ("--module", "--input", "--dynamic", "--shapes", "--weights", "--num-classes"):
        assert flag in text
    assert "torchvision:NAME" in text
