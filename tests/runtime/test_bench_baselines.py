"""The PyTorch baselines (``edgeport.baselines`` entry points) rebuilt from a real bundle."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from edgeport.runtime.bundle import Manifest
from edgeport.runtime.errors import BackendUnavailable, ConfigError, InputError
from edgeport.runtime.reference import load_reference

torch = pytest.importorskip("torch")


def _baseline(name: str):
    (ep,) = [ep for ep in entry_points(group="edgeport.baselines") if ep.name == name]
    return ep.load()


def test_entry_points_name_the_two_baselines() -> None:
    eager, compiled = _baseline("torch"), _baseline("torch-compile")
    assert eager.name == "torch" and compiled.name == "torch-compile"
    assert eager.unavailable_reason() is None
    reason = compiled.unavailable_reason()
    assert reason is None or "torch.compile" in reason


def test_eager_baseline_reproduces_the_stored_reference(exported_bundle: Path) -> None:
    manifest = Manifest.load(exported_bundle)
    stored = load_reference(exported_bundle, manifest)
    assert stored is not None
    images, logits = stored.inputs["input"][:20], stored.outputs["logits"][:20]
    with _baseline("torch")(exported_bundle, manifest, threads=1) as base:
        out = base.run(images)
        assert out.dtype == np.float32 and out.shape == logits.shape
        np.testing.assert_allclose(out, logits, atol=1e-5, rtol=1e-5)
        with pytest.raises(InputError, match=r"expected a float32 batch of shape \(N, "):
            base.run(images[:, :, :16])
        with pytest.raises(InputError, match="expected dtype float32, got float64"):
            base.run(images.astype(np.float64))


def test_eager_baseline_refuses_bad_settings(exported_bundle: Path) -> None:
    cls = _baseline("torch")
    with pytest.raises(ConfigError, match="fp16 PyTorch baseline needs device='cuda'"):
        cls(exported_bundle, precision="fp16")
    with pytest.raises(ConfigError, match="int8 has no eager"):
        cls(exported_bundle, precision="int8")
    with pytest.raises(ConfigError, match="CUDA-graph replay needs device='cuda'"):
        cls(exported_bundle, cuda_graph=True)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="PyTorch sees no CUDA device"):
            cls(exported_bundle, device="cuda")


@pytest.mark.slow
def test_a_failing_torch_compile_says_why(exported_bundle: Path) -> None:
    code = (
        "import numpy as np\n"
        "from edgeport.train.baselines import TorchCompileBaseline\n"
        "from edgeport.runtime.errors import BackendUnavailable\n"
        f"b = TorchCompileBaseline({str(exported_bundle)!r})\n"
        "try:\n"
        "    b.run(np.zeros((1, *b.card.input_shape), np.float32))\n"
        "    print('COMPILED')\n"
        "except BackendUnavailable as exc:\n"
        "    print('UNAVAILABLE', exc)\n"
    )
    env = {**os.environ, "CXX": "/nonexistent/c++", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert "UNAVAILABLE torch.compile failed for batch 1 on cpu:" in out.stdout, out.stdout
