"""Real ONNX models that no one here wrote (from PyPI wheels), run through ``load``/``infer``.

Each is compared with a bare ONNX Runtime session on the same file: edgeport must give the
same outputs, and refuse what the model cannot take with a message naming the input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from thirdparty.models import model_path

from edgeport.runtime import InputError, load


def _model(name: str) -> Path:
    path = model_path(name)
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `make models` (or python tests/thirdparty/models.py)")
    return path


def _bare(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_silero_vad_three_inputs_with_a_0d_int64_and_a_shared_batch_dimension() -> None:
    path = _model("silero_vad")
    rng = np.random.default_rng(0)
    feeds = {
        "input": rng.uniform(-0.5, 0.5, (2, 512)).astype(np.float32),
        "sr": np.array(16000, dtype=np.int64),
        "state": np.zeros((2, 2, 128), np.float32),
    }
    with load(path, threads=1) as model:
        assert [(s.name, s.dtype, s.shape) for s in model.inputs] == [
            ("input", "float32", ("batch", "sequence")),
            ("sr", "int64", ()),
            ("state", "float32", (2, "batch", 128)),
        ]
        assert [s.name for s in model.outputs] == ["output", "stateN"]
        out = model.infer(feeds)
        assert list(out) == ["output", "stateN"]
        for got, want in zip(out.values(), _bare(path, feeds), strict=True):
            assert np.array_equal(got, want)
        assert out["output"].shape == (2, 1)
        assert ((out["output"] >= 0) & (out["output"] <= 1)).all()
        with pytest.raises(InputError, match=r"input 'sr': expected dtype int64, got int32.*int64"):
            model.infer({**feeds, "sr": np.array(16000, dtype=np.int32)})
        with pytest.raises(InputError, match=r"'state' has batch=3 .* 'input' has batch=2"):
            model.infer({**feeds, "state": np.zeros((2, 3, 128), np.float32)})
        with pytest.raises(InputError, match=r"input 'state': axis 2 must be 128, got 64"):
            model.infer({**feeds, "state": np.zeros((2, 2, 64), np.float32)})
        with pytest.raises(InputError, match=r"missing \['sr'\]"):
            model.infer({"input": feeds["input"], "state": feeds["state"]})
        with pytest.raises(InputError, match=r"Model.run takes models with one input"):
            model.run(feeds["input"])


def test_ppocr_detector_with_dynamic_height_and_width() -> None:
    path = _model("ppocr_det")
    image = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    with load(path, threads=1) as model:
        (spec,) = model.inputs
        assert spec.dtype == "float32" and spec.shape[1] == 3
        assert all(isinstance(d, str) for d in (spec.shape[0], spec.shape[2], spec.shape[3]))
        out = model.run(image)
        assert out.shape == (1, 1, 64, 96)
        assert np.array_equal(out, _bare(path, {spec.name: image})[0])
        with pytest.raises(InputError, match=r"expected 3 channels"):
            model.run(np.zeros((1, 1, 64, 96), np.float32))


def test_ppocr_orientation_classifier_batch_of_three() -> None:
    path = _model("ppocr_cls")
    batch = np.random.default_rng(2).uniform(-1, 1, (3, 3, 48, 192)).astype(np.float32)
    with load(path, threads=1) as model:
        probabilities = model.run(batch)
        assert probabilities.shape == (3, 2)
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
        assert np.array_equal(probabilities, _bare(path, {model.input_name: batch})[0])


def test_magika_byte_classifier() -> None:
    path = _model("magika")
    data = np.random.default_rng(3).integers(0, 256, (2, 1536)).astype(np.float32)
    with load(path, threads=1) as model:
        assert model.inputs[0].shape[1] == 1536 and model.outputs[0].shape[1] == 113
        out = model.infer({model.input_name: data})[model.output_name]
        assert np.array_equal(out, _bare(path, {model.input_name: data})[0])
        with pytest.raises(InputError, match=r"input 'bytes': axis 1 must be 1536, got 100"):
            model.run(np.zeros((2, 100), np.float32))
