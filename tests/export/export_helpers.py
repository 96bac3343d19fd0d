"""Small helpers shared by the export tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgeport.export.onnx import ExportedGraph, torch_to_onnx
from edgeport.runtime.card import ModelCard

DIGITS = tuple(str(i) for i in range(10))


class SvdNet(nn.Module):
    """A 16x16 digits classifier built on singular values: an operator torch.onnx cannot export."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.linalg.svdvals(x.flatten(1, 2)))


def digits_card(size: int = 16, architecture: str = "simple_cnn_bn") -> ModelCard:
    return ModelCard(architecture, 10, DIGITS, 1, (size, size), (0.5,), (0.5,))


def edgeport_command(*args: str) -> list[str]:
    """The installed ``edgeport`` console script with ``args``, to run as a subprocess."""
    return [str(Path(sys.executable).with_name("edgeport")), *args]


def export_command(
    *args: str, cwd: Path | None = None, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """``edgeport export ARGS`` run as a subprocess (a user's shell), output captured."""
    return subprocess.run(
        edgeport_command("export", *args),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``edgeport export ARGS`` in this process: the exit code and stderr."""
    from edgeport.runtime.cli import main

    code = main(["export", *args])
    return code, capsys.readouterr().err


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def save_run(run_dir: Path, model: object, card: ModelCard, dataset: str = "digits") -> Path:
    """A real run directory for ``model`` (as `edgeport train` writes it)."""
    from edgeport.train.checkpoint import save_checkpoint

    return save_checkpoint(
        run_dir, model, card, metrics={"test_accuracy": 0.0}, config={"data": dataset}
    )


def snapshot(directory: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``directory``."""
    from edgeport.runtime.io import sha256_file

    return {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def leftovers(dest: Path) -> list[str]:
    """Staging or set-aside directories an export left beside ``dest``."""
    return sorted(
        p.name
        for p in dest.parent.iterdir()
        if p.name.startswith((f".{dest.name}.partial-", f".{dest.name}.old-"))
    )


def export_classifier(model: nn.Module, card: ModelCard, max_batch: int = 32) -> ExportedGraph:
    """``model`` exported with the classifier's names and a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    return torch_to_onnx(
        model,
        (torch.zeros(2, *card.input_shape),),
        input_names=("input",),
        output_names=("logits",),
        dynamic_shapes=({0: batch},),
    )


def comparison(parity: dict, output: str | None = None) -> dict:
    """The comparison record of one output (default: the first) in a stored verdict."""
    outputs = parity["outputs"]
    found = outputs[0] if output is None else next(o for o in outputs if o["name"] == output)
    return found["comparison"]
