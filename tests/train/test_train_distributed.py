"""Distributed training: ``edgeport train --nproc-per-node 2`` (torchrun, gloo on CPU) against
one process, rank-0-only files, resume of a two-process run, and ``torchrun -m edgeport.train``.

Every run is a real subprocess tree (torchrun and its workers) on the embedded digits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError
from edgeport.train.checkpoint import read_safetensors
from edgeport.train.distributed import ENV, LaunchConfig, per_rank_batch

EPOCHS = 4
COMMON = (
    "--model", "simple_cnn_bn", "--data", "digits", "--no-augment", "--batch-size", "32",
    "--seed", "0", "--threads", "1", "--no-progress",
)  # fmt: skip


def edgeport(*argv: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``edgeport ARGV`` (or ``python -m MODULE`` when argv starts with -m) in a new process
    tree whose environment holds no launcher variables except those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if k not in (*ENV, "MASTER_ADDR", "MASTER_PORT")}
    args = [str(a) for a in argv]
    command = args if args[0] == "-m" else ["-m", "edgeport.runtime.cli", *args]
    done = subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        timeout=600,
        env={**clean, **(env or {})},
    )
    return done


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One process and two for EPOCHS epochs, and two stopped an epoch early, then resumed."""
    root = tmp_path_factory.mktemp("distributed")
    out = {name: root / name for name in ("one", "two", "resumed")}
    ok(edgeport("train", *COMMON, "--epochs", EPOCHS, "--out", out["one"]))
    stdout = ok(edgeport("train", *COMMON, "--epochs", EPOCHS, "--out", out["two"],
                         "--nproc-per-node", 2))  # fmt: skip
    (root / "two.stdout").write_text(stdout)
    ok(edgeport("train", *COMMON, "--epochs", EPOCHS - 1, "--out", out["resumed"],
                "--nproc-per-node", 2))  # fmt: skip
    ok(edgeport("train", "--resume", out["resumed"], "--epochs", EPOCHS, "--nproc-per-node", 2))
    return out


def metrics(run: Path) -> dict[str, object]:
    return json.loads((run / "metrics.json").read_text())


@pytest.mark.slow
def test_two_processes_reach_one_process_accuracy(runs: dict[str, Path]) -> None:
    one, two = metrics(runs["one"]), metrics(runs["two"])
    assert abs(one["test_accuracy"] - two["test_accuracy"]) <= 0.01, (one, two)  # type: ignore[operator]
    assert two["test_accuracy"] > 0.9  # type: ignore[operator]
    assert len(two["history"]) == EPOCHS  # type: ignore[arg-type]
    config = json.loads((runs["two"] / "config.json").read_text())
    assert config["batch_size"] == 32  # the global batch, as given
    assert config["distributed"] == {"world_size": 2, "backend": "gloo", "per_rank_batch_size": 16}
    assert "distributed" not in json.loads((runs["one"] / "config.json").read_text())


@pytest.mark.slow
def test_rank_zero_alone_writes_and_reports(runs: dict[str, Path]) -> None:
    names = sorted(p.name for p in runs["two"].iterdir())
    assert names == sorted(p.name for p in runs["one"].iterdir())  # no rank-1 or partial files
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
    stdout = (runs["two"].parent / "two.stdout").read_text()
    assert stdout.count("test accuracy") == 1 and stdout.count("run saved to") == 1


@pytest.mark.slow
def test_resumed_two_process_run_repeats_the_uninterrupted_one(runs: dict[str, Path]) -> None:
    resumed, whole = metrics(runs["resumed"]), metrics(runs["two"])
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, EPOCHS + 1))  # type: ignore[attr-defined]
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    got = read_safetensors(runs["resumed"] / "weights.safetensors")
    want = read_safetensors(runs["two"] / "weights.safetensors")
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


@pytest.mark.slow
def test_torchrun_module_entry_and_launcher_environment(tmp_path: Path) -> None:
    quick = ("--epochs", "1", "--limit", "256")
    out = tmp_path / "torchrun"
    ok(edgeport("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "edgeport.train", *COMMON, *quick, "--out", out))  # fmt: skip
    assert json.loads((out / "config.json").read_text())["distributed"]["world_size"] == 2
    assert len(metrics(out)["history"]) == 1  # type: ignore[arg-type]

    single = tmp_path / "single"  # a launcher's environment with a world of one: no group
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    stdout = ok(edgeport("-m", "edgeport.train", "-q", *COMMON, *quick, "--out", single, env=env))
    assert "test accuracy" in stdout
    assert "distributed" not in json.loads((single / "config.json").read_text())


def test_a_batch_size_the_world_does_not_divide_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        ["train", *COMMON, "--batch-size", "33", "--out", str(out), "--nproc-per-node", "2"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "the batch size 33 does not divide among 2 processes" in err and "e.g. 32" in err
    assert not out.exists()  # refused before any process started
    with pytest.raises(ConfigError, match="does not divide among 4 processes"):
        per_rank_batch(30, 4)
    assert per_rank_batch(32, 4) == 8


def test_launch_settings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert LaunchConfig(2).torchrun_args() == ["--nproc-per-node=2", "--nnodes=1", "--standalone"]
    assert LaunchConfig(4, nnodes=2, node_rank=1, master_addr="10.0.0.5").torchrun_args() == [
        "--nproc-per-node=4", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.5",
        "--master-port=29500",
    ]  # fmt: skip
    assert LaunchConfig(2, nnodes=2, master_addr="h").world_size == 4
    with pytest.raises(ConfigError, match="several nodes need --master-addr"):
        LaunchConfig(2, nnodes=2)
    with pytest.raises(ConfigError, match=r"--node-rank must be in 0\.\.1"):
        LaunchConfig(2, nnodes=2, node_rank=2, master_addr="h")
    code = main(["train", *COMMON, "--out", str(tmp_path / "r"), "--nnodes", "2"])
    assert code == 1 and "--nnodes only apply with --nproc-per-node N" in capsys.readouterr().err
