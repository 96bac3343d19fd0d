"""Files that vanish while edgeport uses them: the manifest or an artifact removed while
``check`` runs, a bundle removed between two loads. Each ends in a result or a typed error that
names the file, never ``FileNotFoundError``."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rt_bundles
import rt_graphs
from faultlib import EDGEPORT, TIMEOUT_S

from edgeport.runtime import load
from edgeport.runtime.errors import ModelLoadError
from edgeport.runtime.tools.check import check
from edgeport.runtime.tools.report import check_markdown


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    """A gemm bundle with stored reference inputs and outputs, so check needs no torch."""
    root = rt_bundles.gemm_bundle(tmp_path / "b", ("fp32", "int8"))
    batch = rt_graphs.integer_batch(4)
    (root / "reference").mkdir()
    np.savez(root / "reference" / "inputs.npz", input=batch)
    np.savez(root / "reference" / "outputs.npz", logits=rt_graphs.gemm_reference(batch))
    stored = {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz", "count": 4}
    rt_bundles.rewrite_manifest(root, lambda data: data.update(reference=stored))
    return root


def _remove_when_checking(path: Path) -> Callable[[str], None]:
    """A progress callback that removes ``path`` once the reference is ready."""

    def progress(message: str) -> None:
        if message.startswith("reference:") and path.exists():
            path.unlink()

    return progress


def test_the_manifest_removed_while_check_runs(bundle: Path) -> None:
    report = check(bundle, progress=_remove_when_checking(bundle / "manifest.json"))
    assert not report.passed
    assert {v.status for v in report.checks} <= {"error", "skipped"}
    errors = [v.reason for v in report.checks if v.status == "error"]
    assert errors and all("manifest.json not found" in str(e) for e in errors), errors
    assert report.model["manifest_sha256"]  # of the manifest it read, not one read again
    assert "FAILED" in check_markdown(report.to_dict()) or "nothing" in report.verdict


def test_an_artifact_removed_while_check_runs(bundle: Path) -> None:
    report = check(bundle, progress=_remove_when_checking(bundle / "model.int8.onnx"))
    by_name = {v.artifact: v for v in report.checks if v.backend == "onnxruntime-cpu"}
    assert by_name["onnx-fp32"].status == "passed"
    assert by_name["onnx-int8"].status == "error"
    assert "artifact 'onnx-int8' is missing" in str(by_name["onnx-int8"].reason)


def test_a_bundle_removed_between_loads(bundle: Path) -> None:
    with load(bundle, threads=1) as model:
        batch = rt_graphs.integer_batch(2)
        before = model.run(batch)
    shutil.rmtree(bundle)
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        load(bundle)
    assert np.array_equal(before, rt_graphs.gemm_reference(batch))


def test_the_check_command_while_its_manifest_is_removed(bundle: Path) -> None:
    """A real process: the manifest goes once the command says it has its reference."""
    command = [EDGEPORT, "check", str(bundle), "--backend", "onnxruntime-cpu"]
    with subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("reference:"):
                (bundle / "manifest.json").unlink()
                break
        _, err = proc.communicate(timeout=TIMEOUT_S)
    err = "".join(lines) + err
    assert proc.returncode in (0, 1) and "Traceback" not in err, err
    assert not (bundle / "manifest.json").exists()
