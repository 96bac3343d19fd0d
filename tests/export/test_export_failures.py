"""Failed or killed exports: a clear message, no bundle behind, the previous bundle intact."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from export_helpers import (
    SvdNet,
    comparison,
    digits_card,
    edgeport_command,
    leftovers,
    run_cli,
    save_run,
    snapshot,
)

from edgeport.export import CalibrationConfig, export
from edgeport.runtime.bundle import Manifest, verify_artifact
from edgeport.runtime.cli import main
from edgeport.runtime.errors import (
    BackendUnavailable,
    ConfigError,
    DatasetError,
    ExportError,
    ModelLoadError,
)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--precision", "fp32,fp64"], "unknown precision 'fp64'; choose from fp32, fp16, int8"),
        (["--precision", ""], "unknown precision (none given)"),
        (["--batch", "8:4:2"], "batch range must satisfy 1 <= min <= opt <= max, got 8:4:2"),
        (["--batch", "eight"], "batch range must look like MIN:OPT:MAX or N, got 'eight'"),
        (["--opset", "7"], "ONNX opset must be an integer in [17, 23], got 7"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    out = tmp_path / "bundle"
    code, err = run_cli([str(trained_run), "--out", str(out), *flags], capsys)
    assert code == 1
    assert f"error: {message}" in err
    assert not out.exists() and leftovers(out) == []


def test_missing_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundle"
    code, err = run_cli([str(tmp_path / "no-such-run"), "--out", str(out)], capsys)
    assert code == 1
    assert "error: run directory not found" in err and "no-such-run" in err
    assert not out.exists() and leftovers(out) == []
    with pytest.raises(ModelLoadError, match="run directory not found"):
        export(tmp_path / "no-such-run", out)


def test_unknown_precision_through_the_api(trained_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown precision 'fp8'"):
        export(trained_run, tmp_path / "b", precisions=("fp32", "fp8"))
    with pytest.raises(ConfigError, match="parity limit must be a positive number"):
        export(trained_run, tmp_path / "b", parity_limit=0)
    assert not (tmp_path / "b").exists()


def test_tensorrt_requested_but_missing_fails_first(
    trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # importing them now raises ImportError
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'edgeport-export\[tensorrt-rtx\]'"):
        export(trained_run, tmp_path / "b", tensorrt=True)
    assert not (tmp_path / "b").exists() and leftovers(tmp_path / "b") == []


def test_out_must_not_be_a_users_directory(trained_run: Path, tmp_path: Path) -> None:
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match=r"non-empty directory without manifest\.json"):
        export(trained_run, precious)
    with pytest.raises(ConfigError, match="inside the run directory"):
        export(trained_run, trained_run / "bundle")
    assert (precious / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_unsupported_operator_fails_with_its_name(tmp_path: Path) -> None:
    from edgeport.train.models import _REGISTRY, register_model

    register_model("test_svd_net", default_input_size=(16, 16))(
        lambda **kw: SvdNet(kw["num_classes"])
    )
    try:
        run = save_run(tmp_path / "run", SvdNet(), digits_card(16, "test_svd_net"))
        out = tmp_path / "bundle"
        with pytest.raises(ExportError) as info:
            export(run, out, parity_limit=16)
        assert "cannot export test_svd_net to ONNX: operator aten._linalg_svd has no ONNX" in str(
            info.value
        )
        assert not out.exists() and leftovers(out) == []
    finally:
        _REGISTRY.pop("test_svd_net", None)


@pytest.fixture
def previous_bundle(exported_bundle: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the shared bundle standing where the next export writes."""
    dest = tmp_path / "bundle"
    shutil.copytree(exported_bundle, dest)
    return dest, snapshot(dest)


def assert_intact(dest: Path, before: dict[str, str]) -> None:
    assert snapshot(dest) == before
    manifest = Manifest.load(dest)
    for art in manifest.artifacts:
        verify_artifact(dest, art)


def fp16_hostile_run(trained_run: Path, out: Path) -> Path:
    """trained_run's network rescaled so hidden activations fall below fp16's smallest value.

    bn1 is multiplied by 2**-26 and conv2 by 2**26: powers of two, so fp32 is unchanged (ReLU
    and max pooling commute with a positive scale), while in fp16 the activations round to zero
    and conv2's weights exceed its range. (Values too large for fp16 the export keeps in
    float32; values too small it cannot tell from zeros.)
    """
    from edgeport.train.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(trained_run)
    model = checkpoint.model
    with torch.no_grad():
        model.features.bn1.weight.mul_(2.0**-26)
        model.features.bn1.bias.mul_(2.0**-26)
        model.features.conv2.weight.mul_(2.0**26)
    return save_run(out, model, checkpoint.card)


@pytest.mark.slow
def test_parity_failure_fails_the_export_and_keeps_the_previous_bundle(
    trained_run: Path,
    previous_bundle: tuple[Path, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest, before = previous_bundle
    run = fp16_hostile_run(trained_run, tmp_path / "hostile")
    code, err = run_cli(
        [str(run), "--out", str(dest), "--precision", "fp32,fp16", "--parity-limit", "64"], capsys
    )
    assert code == 1
    assert (
        "error: onnx-fp16 on onnxruntime-cpu fails its fp16 tolerance "
        "(logits: top-1 agreement >= 99.5%)" in err
    )
    assert "top-1 agreement" in err and "n=64" in err  # the numbers, not just a verdict
    assert "--allow-parity-failure" in err
    assert_intact(dest, before)
    assert leftovers(dest) == []


@pytest.mark.slow
def test_allow_parity_failure_keeps_the_artifact_marked_failed(
    trained_run: Path, tmp_path: Path
) -> None:
    run = fp16_hostile_run(trained_run, tmp_path / "hostile")
    out = tmp_path / "bundle"
    manifest = export(run, out, precisions="fp32,fp16", parity_limit=64, allow_parity_failure=True)
    fp32, fp16 = manifest.artifact("onnx-fp32"), manifest.artifact("onnx-fp16")
    assert fp32.parity_passed is True and comparison(fp32.parity)["max_abs"] <= 1e-4
    assert fp16.parity_passed is False and fp16.parity["status"] == "failed"
    assert any("top-1 agreement" in f for f in fp16.parity["failures"])
    assert manifest.export["failed_parity"] == ["onnx-fp16"]
    assert Manifest.load(out).artifact("onnx-fp16").parity_passed is False


@pytest.mark.slow
def test_failing_step_midway_keeps_the_previous_bundle(
    trained_run: Path, previous_bundle: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """int8 calibration data that is missing: fails before anything is staged."""
    dest, before = previous_bundle
    with pytest.raises(DatasetError, match=r"CIFAR-10|cifar"):
        export(
            trained_run,
            dest,
            precisions=("fp32", "int8"),
            calib=CalibrationConfig(dataset="cifar10"),
            data_root=tmp_path / "no-cifar-here",
            parity_limit=32,
        )
    assert_intact(dest, before)
    assert leftovers(dest) == []


@pytest.mark.slow
def test_sigkill_during_export_keeps_the_previous_bundle(
    trained_run: Path, previous_bundle: tuple[Path, dict[str, str]]
) -> None:
    dest, before = previous_bundle
    flags = ["--precision", "fp32,fp16,int8", "--parity-limit", "64"]
    proc = subprocess.Popen(
        edgeport_command("export", str(trained_run), "--out", str(dest), *flags),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        # wait until the export is midway: the fp32 ONNX is in its staging directory
        while not list(dest.parent.glob(f".{dest.name}.partial-*/model.fp32.onnx")):
            assert proc.poll() is None, "export ended before it could be killed"
            assert time.monotonic() < deadline, "export did not get midway in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert_intact(dest, before)
    assert leftovers(dest)  # the killed export's staging directory is still there...
    export(trained_run, dest, parity_limit=16)  # ...until the next export removes it
    assert leftovers(dest) == []
    assert [a.name for a in Manifest.load(dest).artifacts] == ["onnx-fp32"]


def test_cli_registration_imports_no_heavy_library() -> None:
    """``edgeport export`` is registered on every ``edgeport`` call, even ``--help``."""
    code = (
        "import sys, argparse\n"
        "from edgeport.export.cli import register_export\n"
        "register_export(argparse.ArgumentParser().add_subparsers())\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_cli_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in (
        "--out",
        "--precision",
        "--tensorrt",
        "--batch",
        "--opset",
        "--calib-data",
        "--calib-size",
        "--calib-method",
        "--data-root",
        "--parity-limit",
        "--allow-parity-failure",
        "--workspace-mb",
    ):
        assert flag in text
    with pytest.raises(SystemExit) as info:
        main(["export", "run", "--out", "b", "--calib-method", "kl"])
    assert info.value.code == 2
    assert "invalid choice: 'kl'" in capsys.readouterr().err
