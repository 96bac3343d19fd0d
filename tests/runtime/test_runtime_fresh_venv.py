"""The device story: a fresh venv with only ``edgeport-runtime[cpu]`` classifies a PNG, no torch.

Installs ``./runtime[cpu]`` from this working tree into a new virtual environment (PyPI access
needed for onnxruntime, numpy and pillow; pip's cache is reused), then loads an ONNX classifier
built here with the onnx helper API (card in its metadata) and predicts on a PNG file, both
from Python and with the ``edgeport`` command, and checks that torch (and onnx, which the
runtime does not need) are absent; ``edgeport check`` and ``edgeport run`` work there too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rt_graphs

from edgeport.runtime import load

REPO = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys
    from edgeport.runtime import load
    with load(sys.argv[1]) as model:
        (pred,) = model.predict([sys.argv[2]], top_k=3)
        info = {"backend": model.backend, "labels": pred.labels,
                "probabilities": pred.probabilities, "explain": model.explain()}
    info["torch_importable"] = importlib.util.find_spec("torch") is not None
    info["onnx_importable"] = importlib.util.find_spec("onnx") is not None
    info["loaded"] = sorted(m for m in ("torch", "onnx", "edgeport.train", "edgeport.export")
                            if m in sys.modules)
    print(json.dumps(info))
    """
)


@pytest.mark.slow
def test_fresh_venv_with_only_the_runtime_predicts(tmp_path: Path) -> None:
    from PIL import Image

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    python = venv / "bin" / "python"

    def venv_run(*argv: object) -> subprocess.CompletedProcess[str]:
        """``argv`` run in the fresh venv."""
        return subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=900,
        )

    def run_in_venv(*argv: object) -> str:
        """stdout of ``argv`` run in the fresh venv; a non-zero exit fails with its stderr."""
        done = venv_run(*argv)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run_in_venv(python, "-m", "pip", "install", "--quiet", f"{REPO / 'runtime'}[cpu]")

    card = rt_graphs.make_card(num_classes=3, in_channels=3, size=(4, 4))
    model_path = rt_graphs.save(
        rt_graphs.gemm_model((3, 4, 4), classes=3, card=card), tmp_path / "classifier.onnx"
    )
    image = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)).save(
        image
    )

    got = json.loads(run_in_venv(python, "-c", PROBE, model_path, image))
    assert got["torch_importable"] is False
    assert got["onnx_importable"] is False
    assert got["loaded"] == []
    assert got["backend"] == "onnxruntime-cpu"
    with load(model_path, threads=1) as here:  # the same answer as in the dev environment
        (want,) = here.predict([image], top_k=3)
    assert got["labels"] == want.labels
    assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-6)

    edgeport = venv / "bin" / "edgeport"
    predicted = json.loads(run_in_venv(edgeport, "predict", model_path, image, "--json"))
    assert predicted["predictions"][0]["labels"][0] == want.top1
    assert "onnxruntime-cpu: can run here" in run_in_venv(edgeport, "inspect", model_path)

    # check and run any model without torch or onnx: an fp16 copy against the fp32 file
    fp16 = rt_graphs.save(
        rt_graphs.gemm_model((3, 4, 4), classes=3, precision="fp16"), tmp_path / "m16.onnx"
    )
    checked = run_in_venv(
        edgeport, "check", fp16, "--reference-model", model_path, "--per-layer", "--json", "c.json"
    )
    assert "Verdict: **passed: 1 run(s) within tolerance**" in checked
    layers = json.loads((tmp_path / "c.json").read_text())["per_layer"]["m16.onnx"]
    assert "pip install 'edgeport-runtime[onnx]'" in layers["error"]
    run_in_venv(edgeport, "run", fp16, "--out", tmp_path / "out.npz")
    with np.load(tmp_path / "out.npz") as out:
        assert out["logits"].shape == (1, 3) and out["logits"].dtype == np.float32

    # batch mode needs the [batch] extra: without Ray, a clear error naming it, nothing written
    batch_out = tmp_path / "predictions.parquet"
    done = venv_run(edgeport, "predict", model_path, image, "--out", batch_out)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "pip install 'edgeport-runtime[batch]'" in done.stderr
    assert "Traceback" not in done.stderr and not batch_out.exists()
