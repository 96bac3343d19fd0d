"""``edgeport train / evaluate / summary`` through the real dispatcher, and import isolation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeport.runtime.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fresh_python_prints(code: str) -> str:
    """What ``code`` prints in a new interpreter (nothing imported beforehand)."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_import_runtime_does_not_import_torch() -> None:
    code = (
        "import sys, edgeport.runtime, edgeport.runtime.preprocess, edgeport.runtime.card\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch'"
        " or m.startswith(('edgeport.train', 'edgeport.export')))\n"
        "print(bad)\n"
    )
    assert fresh_python_prints(code) == "[]"


def test_train_cli_registration_does_not_import_torch() -> None:
    code = (
        "import sys, argparse\n"
        "from edgeport.train.cli import register_train, register_evaluate, register_summary\n"
        "import edgeport.train\n"
        "sub = argparse.ArgumentParser().add_subparsers()\n"
        "[f(sub) for f in (register_train, register_evaluate, register_summary)]\n"
        "print('torch' in sys.modules)\n"
    )
    assert fresh_python_prints(code) == "False"


def test_train_evaluate_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "train", "--model", "simple_cnn", "--data", "digits", "--epochs", "1",
        "--limit", "200", "--no-augment", "--seed", "3", "--out", str(run),
    )  # fmt: skip
    assert code == 0, err
    assert "test accuracy" in out and f"run saved to {run}/" in out and "weights.safetensors" in out
    config = json.loads((run / "config.json").read_text())
    assert (config["seed"], config["limit"], config["augment"]) == (3, 200, False)

    code, out, err = run_cli(capsys, "evaluate", str(run), "--data", "digits", "--json")
    assert code == 0, err
    result = json.loads(out)
    metrics = json.loads((run / "metrics.json").read_text())
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-12)
    assert result["count"] == 359 and sum(result["per_class_count"].values()) == 359
    assert sum(map(sum, result["confusion"])) == 359
    assert set(result["per_class_accuracy"]) == {str(d) for d in range(10)}

    code, out, _ = run_cli(capsys, "evaluate", str(run))
    assert code == 0 and out.startswith("digits test: accuracy") and "\n9 " in out

    code, out, _ = run_cli(capsys, "summary", str(run))
    assert code == 0 and "input 1x32x32 -> output 10" in out


def test_resume_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    common = ["--limit", "128", "--no-augment", "--batch-size", "32"]
    assert run_cli(capsys, "train", "--epochs", "1", *common, "--out", str(run))[0] == 0
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--epochs", "2")
    assert code == 0, err
    assert len(json.loads((run / "metrics.json").read_text())["history"]) == 2
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--lr", "0.1", "--epochs", "3")
    assert code == 1 and "cannot resume" in err and "lr: run has 0.001, asked 0.1" in err


def test_summary_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "summary", "simple_cnn", "--input", "1x16x16", "--json")
    assert code == 0
    data = json.loads(out)
    fc1 = next(layer for layer in data["layers"] if layer["name"] == "classifier.fc1")
    assert fc1["params"] == 131_200 and data["output_shape"] == [10]
    code, out, _ = run_cli(capsys, "summary", "--list")
    assert code == 0 and "simple_cnn_bn" in out and "torchvision:mobilenet_v3_small" in out.split()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["train", "--model", "lenet5", "--out", "X"],
            "unknown model 'lenet5'; available: resnet18",
        ),
        (
            ["train", "--data", "mnist", "--out", "X"],
            "unknown dataset 'mnist'; available: cifar10, digits",
        ),
        (["train", "--model", "torchvision:resnet9", "--out", "X"], "valid names: alexnet"),
        (["summary", "lenet5"], "unknown model 'lenet5'; available: resnet18, simple_cnn"),
        (["evaluate", "NOPE"], "run directory not found: NOPE"),
        (["train", "--epochs", "1"], "edgeport train needs --out RUN_DIR"),
    ],
)
def test_cli_errors(
    argv: list[str],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert err.startswith("error: ") and expected in err
    assert not (tmp_path / "X" / "weights.safetensors").exists()


def test_bad_flag_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["summary", "simple_cnn", "--input", "32x32"])
    assert info.value.code == 2
    assert "expected CxHxW like 3x32x32, got '32x32'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--optimizer", "lamb", "--out", "x"])
    assert "invalid choice: 'lamb'" in capsys.readouterr().err
