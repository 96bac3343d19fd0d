"""Any nn.Module through ``export_module``: two inputs (an image and int64 token ids into an
nn.Embedding), two outputs, fp32/fp16/int8 gated per output, engines with per-input profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _env import tensorrt_module_name
from export_helpers import comparison, export_command, leftovers
from export_models import VOCAB, two_input_example, two_input_module
from fixtures_export import CALIBRATION_SAMPLES

from edgeport.export import ExportSettings, export_module
from edgeport.runtime import load
from edgeport.runtime.bundle import Manifest, verify_artifact
from edgeport.runtime.compare import TOLERANCES
from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.reference import load_reference

ONNX = ["onnx-fp32", "onnx-fp16", "onnx-int8"]
ENGINES = ["tensorrt-fp32", "tensorrt-fp16", "tensorrt-int8"]


def torch_outputs(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        scores, tokens = two_input_module()(*(torch.from_numpy(feeds[k]) for k in ("image", "ids")))
    return {"scores": scores.numpy(), "tokens": tokens.numpy()}


@pytest.mark.slow
def test_every_precision_passes_its_gate_per_output(two_input_bundle: Path) -> None:
    manifest = Manifest.load(two_input_bundle)
    engines = ["onnx-int8-tensorrt", *ENGINES] if tensorrt_module_name() else []
    assert [a.name for a in manifest.artifacts] == ONNX + engines
    for name in ONNX:
        art = manifest.artifact(name)
        verify_artifact(two_input_bundle, art)
        parity = art.parity
        assert parity is not None and parity["status"] == "passed", parity
        assert parity["count"] == 2 + CALIBRATION_SAMPLES  # the example and the calibration data
        assert [(o["name"], o["kind"]) for o in parity["outputs"]] == [
            ("scores", "tensor"),
            ("tokens", "tensor"),
        ]
        for out in parity["outputs"]:
            assert out["tolerance"] == TOLERANCES[(art.precision, "tensor")].to_dict()
    assert comparison(manifest.artifact("onnx-fp32").parity, "tokens")["max_abs"] < 1e-5
    assert comparison(manifest.artifact("onnx-int8").parity, "scores")["cosine_min"] > 0.99


@pytest.mark.slow
def test_card_describes_both_inputs_with_ranges_and_the_embedding_bound(
    two_input_bundle: Path,
) -> None:
    manifest = Manifest.load(two_input_bundle)
    image, ids = manifest.card.inputs
    assert (image.name, image.dtype, image.shape) == ("image", "float32", ("batch", 3, 16, 16))
    assert image.ranges[0] == (1, 4, 8)  # the batch range comes from the ids profile
    assert (ids.name, ids.dtype, ids.shape) == ("ids", "int64", ("batch", "seq"))
    assert ids.ranges == ((1, 4, 8), (1, 16, 64))
    assert ids.value_range == (0, VOCAB - 1)  # found from Gather(embedding table, ids)
    assert [(o.name, o.shape) for o in manifest.card.outputs] == [
        ("scores", ("batch", 5)),
        ("tokens", ("batch", "seq", 16)),
    ]
    assert manifest.card.task == "other" and manifest.card.architecture == "TwoInputNet"
    for art in manifest.artifacts:
        assert art.inputs == manifest.card.inputs
    settings = manifest.export
    assert settings["dynamic_shapes"] == {
        "image": {"0": "batch"},
        "ids": {"0": "batch", "1": "seq"},
    }
    assert settings["shapes"] == {"ids": "1x1:4x16:8x64"}
    assert settings["calibration"]["count"] == CALIBRATION_SAMPLES
    assert settings["source"]["kind"] == "module"
    assert ExportSettings(**{k: settings[k] for k in ("shapes", "precisions")}).shapes == {
        "ids": "1x1:4x16:8x64"
    }


@pytest.mark.slow
def test_stored_reference_reloads_and_is_pytorch(two_input_bundle: Path) -> None:
    manifest = Manifest.load(two_input_bundle)
    assert manifest.reference is not None
    assert set(manifest.reference) == {"inputs", "outputs", "sha256", "dataset", "split", "count"}
    stored = load_reference(two_input_bundle, manifest)
    assert stored is not None and stored.labels is None
    assert stored.count == 2 + CALIBRATION_SAMPLES
    assert stored.inputs["ids"].dtype == np.int64 and stored.inputs["ids"].shape == (66, 7)
    again = torch_outputs(stored.inputs)
    for name in ("scores", "tokens"):
        np.testing.assert_allclose(stored.outputs[name], again[name], atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_runtime_takes_other_batch_and_sequence_sizes(
    two_input_bundle: Path, precision: str
) -> None:
    feeds = two_input_example(batch=3, seq=23, seed=5)
    expected = torch_outputs(feeds)
    with load(two_input_bundle, backend="onnxruntime-cpu", precision=precision) as model:
        out = model.infer(feeds)
        bad = dict(feeds, ids=np.full((3, 23), VOCAB, dtype=np.int64))
        with pytest.raises(InputError, match=r"input 'ids': values must lie in \[0, 99\]"):
            model.infer(bad)
    cosine_floor = {"fp32": 0.99999, "fp16": 0.999, "int8": 0.98}[precision]
    for name, ref in expected.items():
        got = out[name].astype(np.float64).ravel()
        cosine = got @ ref.ravel() / (np.linalg.norm(got) * np.linalg.norm(ref))
        assert out[name].shape == ref.shape and cosine > cosine_floor


@pytest.mark.slow
@pytest.mark.tensorrt
def test_engines_are_built_with_a_profile_per_input(two_input_bundle: Path) -> None:
    from edgeport.runtime.backends.tensorrt import check_plan

    manifest = Manifest.load(two_input_bundle)
    for name in ENGINES:
        art = manifest.artifact(name)
        path = verify_artifact(two_input_bundle, art)
        made_for = "-tensorrt" if art.precision == "int8" else ""  # its own int8 file
        assert art.engine is not None and art.source == name.replace("tensorrt", "onnx") + made_for
        assert [s.all_ranges for s in art.inputs] == [
            ((1, 4, 8), (3, 3, 3), (16, 16, 16), (16, 16, 16)),
            ((1, 4, 8), (1, 16, 64)),
        ]
        validity = check_plan(path, art.engine.flavour)
        assert not {"MALFORMED_ENGINE", "VERSION_MISMATCH"} & set(validity.problems)
        parity = art.parity
        assert parity is not None
        if parity["status"] == "not_run":  # no GPU that can run it here
            assert parity["reason"] and art.parity_passed is None
        else:
            assert art.parity_passed is True, parity


def test_int8_without_calibration_data_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(ConfigError, match=r"int8 needs calibration data: pass calibration="):
        export_module(two_input_module(), two_input_example(), out, precisions="fp32,int8")
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precison": "fp16"}, r"unknown export settings \['precison'\]"),
        ({"dynamic_shapes": {"idz": {0: "batch"}}}, r"names unknown inputs \['idz'\]"),
        (
            {"dynamic_shapes": {"ids": {0: torch.export.Dim.AUTO}}},
            "unnamed hints such as Dim.AUTO are not supported",
        ),
        ({"dynamic_shapes": {"ids": {2: "seq"}}}, r"axes \[2\] do not exist in a rank-2 input"),
        ({"shapes": {"ids": "1x1x1:2x2x2:3x3x3"}}, "has rank 3, the input has rank 2"),
        ({"shapes": {"ids": "1x1:4x4:8x8"}}, "axis 1 the range .* but that axis is static"),
        (
            {
                "shapes": {"ids": "1x1:4x4:8x8"},
                "dynamic_shapes": {"image": {0: "batch"}, "ids": {0: "batch", 1: "seq"}},
            },
            "has seq=12 on axis 1, outside the range 1..8 given for 'seq'",
        ),
        ({"output_names": ("scores",)}, r"1 output names \['scores'\] for a module that returns 2"),
        ({"value_ranges": {"ids": (5, 1)}}, r"needs low <= high"),
        ({"task": "classification"}, "needs class_names"),
        ({"batch": "8:4:2"}, "1 <= min <= opt <= max"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(
    tmp_path: Path, options: dict, message: str
) -> None:
    out = tmp_path / "bundle"
    example = two_input_example(seq=12)
    with pytest.raises(ConfigError, match=message):
        export_module(two_input_module(), example, out, **options)
    assert not out.exists() and leftovers(out) == []


def test_calibration_data_must_match_the_inputs(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npz"
    np.savez(calib, image=np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(ConfigError, match=r"calib\.npz has inputs \['image'\], the model takes"):
        export_module(two_input_module(), two_input_example(), tmp_path / "b", calibration=calib)
    wrong = dict(two_input_example(4), ids=two_input_example(4)["ids"].astype(np.int32))
    with pytest.raises(ConfigError, match=r"input 'ids' is int32 .*\(x\.astype\(np\.int64\)\)"):
        export_module(two_input_module(), two_input_example(), tmp_path / "b", calibration=[wrong])
    assert not (tmp_path / "b").exists()


def test_an_output_without_a_sample_axis_is_refused(tmp_path: Path) -> None:
    class Anchors(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("boxes", torch.rand(30, 4))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x * 2, self.boxes.clone()

    with pytest.raises(ConfigError, match=r"output 'output_1' has shape \[30, 4\] for a batch of"):
        export_module(Anchors(), torch.zeros(2, 3), tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_cli_exports_a_factory_with_inputs_described_by_flags(
    tmp_path: Path, two_input_calibration: Path
) -> None:
    out = tmp_path / "bundle"
    flags = [
        "--module", "export_models:two_input",
        "--input", "image:2x3x16x16",
        "--input", "ids:2x7:int64",
        "--value-range", "ids:0,99",
        "--dynamic", "ids:1=seq",
        "--output-name", "scores",
        "--output-name", "tokens",
        "--precision", "fp32,int8",
        "--calib-data", str(two_input_calibration),
        "--int8-targets", "onnxruntime",
        "--keep-slow-int8",  # a model this small is not faster in int8
    ]  # fmt: skip
    # run where export_models.py is, as a user runs it next to their model code
    repo = tmp_path / "triton"
    proc = export_command(
        *flags, "--out", str(out), "--triton-repo", str(repo), cwd=Path(__file__).parent
    )
    assert proc.returncode == 0, proc.stderr
    assert "onnx-int8" in proc.stdout and "scores max_abs=" in proc.stdout
    assert sorted(p.name for p in repo.iterdir()) == ["bundle-onnx-fp32", "bundle-onnx-int8"]
    _assert_triton_config(repo / "bundle-onnx-int8", inputs=["image", "ids"])
    manifest = Manifest.load(out)
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32", "onnx-int8"]
    ids = manifest.card.inputs[1]
    assert ids.shape == ("batch", "seq") and ids.value_range == (0, 99)
    assert manifest.export["source"] == {"kind": "module", "factory": "export_models:two_input"}
    stored = json.loads((out / "manifest.json").read_text())["reference"]
    assert stored["count"] == 2 + CALIBRATION_SAMPLES


def _assert_triton_config(model_dir: Path, inputs: list[str]) -> None:
    """The config parses with Triton's own protobuf and names the model's inputs."""
    from google.protobuf import text_format

    pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), pb2.ModelConfig())
    assert config.name == model_dir.name and [i.name for i in config.input] == inputs
    assert (model_dir / "1" / "model.onnx").is_file()
