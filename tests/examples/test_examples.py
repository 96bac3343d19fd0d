"""Every script in examples/ runs here as a user runs it (``python examples/NAME.py ...``, its own
process), on real models, and prints what its docstring promises, so none goes stale."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from serve.serve_helpers import free_port
from thirdparty.models import model_path

from edgeport.runtime import load

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT_S = 600


def run_example(name: str, *args: object) -> str:
    """Run examples/``name`` with ``args``; its stdout, after asserting it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_every_example_has_a_test() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [p.name for p in EXAMPLES.glob("*.py") if f'"{p.name}"' not in source]
    assert not untested, f"examples without a test here: {untested}"


@pytest.mark.slow
def test_torchvision_model(tmp_path: Path) -> None:
    out = run_example("torchvision_model.py", tmp_path / "bundle")
    assert "onnx-fp32" in out and "onnx-fp16" in out
    assert out.count("parity passed") == 2, out
    assert re.search(r"^onnxruntime-cpu fp32: (cat|dog|bird|fish) \(0\.\d\d\)$", out, re.M), out
    with load(tmp_path / "bundle") as model:  # the bundle it wrote is a classifier with a card
        assert model.card is not None and model.card.class_names == ("cat", "dog", "bird", "fish")


def test_onnx_file(tmp_path: Path) -> None:
    path = model_path("magika")
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `make models` (or python tests/thirdparty/models.py)")
    out = run_example("onnx_file.py", path)
    assert "chosen: onnxruntime-cpu" in out
    assert re.search(r"^target_label: float32 \[1, 113\], values ", out, re.M), out

    feeds = tmp_path / "in.npz"
    np.savez(feeds, bytes=np.full((3, 1536), 7, np.float32))
    out = run_example("onnx_file.py", path, "--inputs", feeds)
    assert re.search(r"^target_label: float32 \[3, 113\]", out, re.M), out


@pytest.mark.slow
def test_check_and_bench(exported_bundle: Path) -> None:
    out = run_example("check_and_bench.py", exported_bundle, "--duration-s", "0.2")
    assert re.search(r"^passed: \d+ run\(s\) within tolerance$", out, re.M), out
    assert re.search(r"^onnx-int8 on onnxruntime-cpu passed: ", out, re.M), out
    rows = re.findall(r"^(\S.*?)\s+1\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    labels = [label for label, *_ in rows]
    assert "onnxruntime-cpu fp32" in labels and any(x.startswith("auto (") for x in labels), out
    assert all(float(p50) > 0 for _, p50, _, _ in rows)


@pytest.mark.slow
def test_serve_and_call(exported_bundle: Path) -> None:
    out = run_example("serve_and_call.py", exported_bundle, "--port", free_port())
    assert re.search(r"^logits: float32 \[1, 10\] \[", out, re.M), out


@pytest.mark.slow
def test_batch_predict_folder(exported_bundle: Path, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(6):
        pixels = rng.integers(0, 256, (20 + index, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("nested" if index % 2 else "") / f"{index}.png")
    (folder / "broken.png").write_bytes(b"not an image")

    out = run_example("batch_predict_folder.py", exported_bundle, folder, tmp_path / "p.parquet")
    assert re.search(r"^7 rows \(1 errors\) in [\d.]+ s$", out, re.M), out
    assert re.search(r"^broken\.png: cannot read image ", out, re.M), out
    digits = re.findall(r"^\d\.png: (\d) [\d.]+, (\d) [\d.]+, (\d) [\d.]+$", out, re.M)
    assert len(digits) == 6, out
