"""``edgeport predict`` and ``edgeport inspect`` through the real dispatcher."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rt_engines
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_predict_and_inspect() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgeport.runtime.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "predict" in out and "inspect" in out


def test_predict_text(
    capsys: pytest.CaptureFixture[str], gemm_bundle_dir: Path, digit_images: list[Path]
) -> None:
    code, out, _ = run_cli(
        capsys, "predict", gemm_bundle_dir, *digit_images, "--top-k", "2", "--threads", "1"
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == f"# {gemm_bundle_dir}: onnx-fp32 on onnxruntime-cpu (fp32)"
    with load(gemm_bundle_dir, threads=1) as model:
        expected = model.predict(digit_images, top_k=2)
    for line, image, pred in zip(lines[1:], digit_images, expected, strict=True):
        assert line.startswith(f"{image}: {pred.top1} ({pred.confidence:.3f})")
        assert f"{pred.labels[1]} {pred.probabilities[1]:.3f}" in line


def test_predict_json(
    capsys: pytest.CaptureFixture[str], gemm_bundle_dir: Path, digit_images: list[Path]
) -> None:
    code, out, _ = run_cli(
        capsys,
        "predict",
        gemm_bundle_dir,
        digit_images[1],
        "--json",
        "--precision",
        "int8",
        "--explain",
    )
    assert code == 0
    report = json.loads(out)
    assert report["backend"] == "onnxruntime-cpu"
    assert report["precision"] == "int8"
    assert report["artifact"] == "onnx-int8"
    (pred,) = report["predictions"]
    assert pred["image"] == str(digit_images[1])
    assert len(pred["labels"]) == 3 and sum(pred["probabilities"]) == pytest.approx(1.0)
    assert "onnxruntime-cpu [onnx-int8, int8]: chosen" in report["explain"]


def test_predict_errors_exit_1_with_the_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, digit_images: list[Path]
) -> None:
    bare = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "bare.onnx")
    code, out, err = run_cli(capsys, "predict", bare, digit_images[0])
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "has no model card" in err
    code, _, err = run_cli(capsys, "predict", tmp_path / "missing", digit_images[0])
    assert code == 1 and "no such file or directory" in err


def test_predict_standalone_onnx_with_card(
    capsys: pytest.CaptureFixture[str], cnn_onnx: Path, digit_images: list[Path]
) -> None:
    code, out, _ = run_cli(capsys, "predict", cnn_onnx, *digit_images, "--json", "--top-k", "1")
    assert code == 0
    report = json.loads(out)
    assert report["artifact"] is None and report["precision"] == "fp32"
    assert [len(p["labels"]) for p in report["predictions"]] == [1, 1, 1]
    assert all(p["labels"][0] in [str(i) for i in range(10)] for p in report["predictions"])


def test_inspect_bundle_json(capsys: pytest.CaptureFixture[str], gemm_bundle_dir: Path) -> None:
    code, out, _ = run_cli(capsys, "inspect", gemm_bundle_dir, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["kind"] == "bundle"
    assert report["card"]["num_classes"] == 3
    arts = {a["name"]: a for a in report["artifacts"]}
    assert set(arts) == {"onnx-fp32", "onnx-fp16", "onnx-int8"}
    fp32 = arts["onnx-fp32"]
    assert fp32["integrity"] == "sha256 ok"
    assert fp32["parity"] == "passed"
    assert fp32["batch"] == "1:4:16"
    assert fp32["inputs"] == [
        {
            "name": "input",
            "dtype": "float32",
            "shape": ["batch", 1, 2, 2],
            "ranges": [[1, 4, 16], [1, 1, 1], [2, 2, 2], [2, 2, 2]],
            "text": "input: float32 [batch, 1, 2, 2] (batch 1..16)",
        }
    ]
    assert [o["text"] for o in fp32["outputs"]] == [
        "logits: float32 [batch, ?] (batch 1..16, axis 1 1..unbounded)"
    ]
    assert report["task"] == "classification"
    assert fp32["backends"]["onnxruntime-cpu"] is None
    assert set(fp32["backends"]) == {
        "onnxruntime-tensorrt",
        "onnxruntime-cuda",
        "onnxruntime-cpu",
        "openvino",
    }
    assert set(report["machine"]["backends"]) == {
        "tensorrt",
        "onnxruntime-tensorrt",
        "onnxruntime-cuda",
        "onnxruntime-cpu",
        "openvino",
        "litert",
        "executorch",
    }
    if report["machine"]["backends"]["onnxruntime-cuda"] is not None:
        assert report["auto_choice"] == {
            "backend": "onnxruntime-cpu",
            "target": "onnx-fp32",
            "precision": "fp32",
        }


def test_inspect_bundle_text_and_damage(
    capsys: pytest.CaptureFixture[str], gemm_bundle_dir: Path, tmp_path: Path
) -> None:
    code, out, _ = run_cli(capsys, "inspect", gemm_bundle_dir)
    assert code == 0
    assert "card: tiny_test, 3 classes [class0, class1, class2], input 1x2x2 NCHW" in out
    assert "onnx-int8: onnx int8" in out and "parity passed, sha256 ok" in out
    assert "input input: float32 [batch, 1, 2, 2] (batch 1..16)" in out
    assert "onnxruntime-cpu: can run here" in out
    assert "backends on this machine:" in out
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    path = bundle / "model.fp16.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    code, out, _ = run_cli(capsys, "inspect", bundle)
    assert code == 1  # a bad artifact is an error, named
    assert "BAD: artifact 'onnx-fp16'" in out
    code, out, _ = run_cli(capsys, "inspect", bundle, "--no-verify")
    assert "not checked (--no-verify)" in out and "BAD" not in out


def test_inspect_standalone_onnx(
    capsys: pytest.CaptureFixture[str], cnn_onnx: Path, tmp_path: Path
) -> None:
    code, out, _ = run_cli(capsys, "inspect", cnn_onnx, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["kind"] == "onnx"
    assert report["card"]["architecture"] == "simple_cnn_bn"
    (art,) = report["artifacts"]
    assert art["precision"] == "fp32"
    assert art["inputs"][0]["shape"] == ["batch", 3, 32, 32]
    bare = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "bare.onnx")
    code, out, _ = run_cli(capsys, "inspect", bare)
    assert code == 0 and "card: none" in out


def test_inspect_refuses_what_is_not_a_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "inspect", tmp_path)
    assert code == 1 and "manifest.json not found" in err


@pytest.mark.tensorrt
def test_inspect_engine_bundle(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from _env import tensorrt_module_name

    from edgeport.runtime.bundle import EngineInfo

    name = tensorrt_module_name()
    assert name is not None
    trt = importlib.import_module(name)
    info = EngineInfo(flavour=name, version=trt.__version__)
    root = rt_engines.engine_bundle(
        tmp_path / "b", rt_graphs.gemm_model(), rt_graphs.make_card(num_classes=3), info
    )
    code, out, _ = run_cli(capsys, "inspect", root, "--json")
    assert code == 0
    engine = {a["name"]: a for a in json.loads(out)["artifacts"]}["tensorrt-fp32"]
    assert engine["engine"]["flavour"] == name
    assert engine["engine"]["compute_capability"] == "any supported"
    assert set(engine["backends"]) == {"tensorrt"}
    verdict, reason = engine["library_verdict"], engine["backends"]["tensorrt"]
    assert verdict.split()[0] in {"valid", "suboptimal", "invalid", "unknown"}, verdict
    assert "MALFORMED" not in verdict
    code, out, _ = run_cli(capsys, "inspect", root)
    assert f"engine: {name} {trt.__version__}" in out
    assert f"library verdict: {verdict}" in out
    assert ("tensorrt: can run here" if reason is None else f"tensorrt: no: {reason}") in out


def test_predict_runs_on_images_the_card_must_resize(
    capsys: pytest.CaptureFixture[str], cnn_bundle_dir: Path, tmp_path: Path
) -> None:
    from PIL import Image

    image = tmp_path / "big.png"
    Image.fromarray(np.full((64, 48, 3), 200, np.uint8)).save(image)
    code, out, _ = run_cli(
        capsys, "predict", cnn_bundle_dir, image, "--top-k", "3", "--threads", "1"
    )
    assert code == 0 and out.splitlines()[1].startswith(f"{image}: ")


def test_predict_max_image_pixels_sets_the_limit(
    capsys: pytest.CaptureFixture[str], gemm_bundle_dir: Path, digit_images: list[Path]
) -> None:
    from edgeport.runtime import preprocess

    try:
        code, out, err = run_cli(
            capsys, "predict", gemm_bundle_dir, digit_images[1], "--max-image-pixels", "1000"
        )
        assert code == 1 and out == ""
        assert "30x40 = 1,200 pixels, above the limit of 1,000" in err
        code, _, _ = run_cli(
            capsys, "predict", gemm_bundle_dir, digit_images[1], "--max-image-pixels", "1200"
        )
        assert code == 0
    finally:
        preprocess.set_max_image_pixels(preprocess.MAX_IMAGE_PIXELS)
