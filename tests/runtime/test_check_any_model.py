"""``edgeport check``, ``run`` and ``inspect`` on models of any shape: a detector (float and
int64 outputs), a two-input model (image + token ids into a Gather) and a token model (int64 ids
and a bool mask in; float, int64 and bool out), as bare .onnx files and as bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import rt_bundles
import rt_engines
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.card import ModelCard
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.reference import npy_bytes, npz_bytes
from edgeport.runtime.tools.check import check

CPU = "onnxruntime-cpu"
TOKENS = ["--shapes", "ids:2x5", "--value-range", "ids:0,9"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each model in fp32, as an fp16 copy (onnxconverter_common, keep_io_types) and broken."""
    root = tmp_path_factory.mktemp("any")
    out = {}
    for name, model, weight in (
        ("detector", rt_graphs.detector_model(), "Wb"),
        ("two_input", rt_graphs.two_input_model(), "E"),
        ("tokens", rt_graphs.token_model(), "E"),
    ):
        out[name] = rt_graphs.save(model, root / f"{name}.onnx")
        out[f"{name}16"] = rt_graphs.save(rt_graphs.fp16_copy(model), root / f"{name}.fp16.onnx")
        out[f"{name}_broken"] = rt_graphs.save(
            rt_graphs.broken_copy(model, weight), root / f"{name}.bad.onnx"
        )
    out["tokens_count"] = rt_graphs.save(
        rt_graphs.token_model(count_offset=1), root / "tokens.count.onnx"
    )
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- check: bare files ------------------------------------------------------------------------


def test_fp16_detector_passes_every_output_by_its_kind(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "check.json"
    code, out, err = run_cli(
        capsys,
        "check",
        files["detector16"],
        "--reference-model",
        files["detector"],
        "--backend",
        CPU,
        "--samples",
        "3",
        "--shapes",
        "image:2x3x4x4",
        "--json",
        report_path,
    )
    assert code == 0, err
    data = read_json(report_path)
    (run,) = [c for c in data["checks"] if c["status"] != "skipped"]
    assert (run["artifact"], run["backend"]) == ("detector.fp16.onnx", CPU)
    assert run["precision"] == "fp16"
    assert run["status"] == "passed" and run["count"] == 6
    kinds = {o["name"]: o["kind"] for o in run["outputs"]}
    assert kinds == {"boxes": "tensor", "scores": "tensor", "labels": "exact"}
    by_name = {o["name"]: o for o in run["outputs"]}
    assert by_name["boxes"]["comparison"]["shape"] == [6, 4, 4]
    assert 0 < by_name["boxes"]["comparison"]["max_abs"] < 0.1  # fp16 arithmetic, not equal
    assert by_name["labels"]["comparison"]["mismatched_elements"] == 0
    assert by_name["labels"]["tolerance"]["max_mismatch_fraction"] == 0.005  # the fp16 row
    reference = data["reference"]
    assert reference["kind"] == CPU and reference["batches"] == 3 and reference["count"] == 6
    assert reference["inputs"] == {"image": "float32 [2, 3, 4, 4]"}
    assert data["settings"]["shapes"] == {"image": [2, 3, 4, 4]}
    for output in ("boxes", "scores", "labels"):
        assert f"| detector.fp16.onnx | {CPU} | passed | `{output}` |" in out


def test_a_broken_copy_fails_naming_the_output(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys,
        "check",
        files["detector_broken"],
        "--reference-model",
        files["detector"],
        "--backend",
        CPU,
    )
    assert code == 1
    assert "error: FAILED: detector.bad.onnx on onnxruntime-cpu (failed)" in err
    (line,) = [x for x in err.splitlines() if "fails its fp32 tolerance" in x]
    assert "(boxes: elements off by more than 2e-3" in line and "boxes: max abs error" not in line
    assert "boxes: " in line and "scores: " not in line and "labels: " not in line
    assert "| detector.bad.onnx | onnxruntime-cpu | FAILED ✗ | `boxes` |" in out
    assert "| detector.bad.onnx | onnxruntime-cpu | FAILED | `labels` | exact |" in out


def test_integer_outputs_must_match_exactly_in_fp32(files: dict[str, Path]) -> None:
    report = check(
        files["tokens_count"],
        reference_model=files["tokens"],
        backends=[CPU],
        shapes={"ids": (2, 5)},
        value_ranges={"ids": (0, 9)},
    )
    (run,) = report.checked
    assert run.status == "failed"
    outputs = {o.name: o for o in run.outputs}
    assert [o.kind for o in run.outputs] == ["tensor", "exact", "exact"]
    assert outputs["hidden"].failures == () and outputs["kept"].failures == ()
    assert outputs["count"].failures == (
        "8 of 8 elements (100.00%) differ from the reference; at most 0.00% allowed",
    )
    assert run.failures == [f"count: {outputs['count'].failures[0]}"]


def test_fp16_token_model_passes_with_its_int_and_bool_outputs_equal(
    files: dict[str, Path],
) -> None:
    report = check(
        files["tokens16"],
        reference_model=files["tokens"],
        backends=[CPU],
        shapes={"ids": (2, 5)},
        value_ranges={"ids": (0, 9)},
        seed=3,
    )
    (run,) = report.checked
    assert run.status == "passed" and run.precision == "fp16", run.message()
    for output in run.outputs[1:]:
        assert output.kind == "exact" and output.comparison.mismatched_elements == 0
    feeds = report.reference.batches[0] if report.reference else {}
    assert feeds["ids"].dtype == np.int64 and feeds["mask"].dtype == np.bool_
    assert feeds["ids"].min() >= 0 and feeds["ids"].max() <= 9 and feeds["ids"].max() > 1


def test_two_input_model_checks_on_inputs_from_an_npz(
    files: dict[str, Path], tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    feeds = {
        "image": rng.standard_normal((5, 3, 4, 4)).astype(np.float32),
        "ids": rng.integers(0, rt_graphs.VOCAB, (5, 7)),
    }
    inputs = tmp_path / "in.npz"
    inputs.write_bytes(npz_bytes(feeds))
    report = check(files["two_input16"], reference_model=files["two_input"], inputs=inputs)
    run = next(c for c in report.checked if c.backend == CPU)
    assert report.passed and run.passed and run.count == 5
    (fused,) = run.outputs
    assert fused.comparison.shape == (5, 8) and fused.comparison.max_abs > 0
    data = report.to_dict()
    assert data["reference"]["dataset"] == str(inputs)
    assert data["reference"]["inputs"] == {"image": "float32 [5, 3, 4, 4]", "ids": "int64 [5, 7]"}
    wrong = tmp_path / "wrong.npz"
    wrong.write_bytes(npz_bytes({"image": feeds["image"]}))
    with pytest.raises(InputError, match=r"holds arrays \['image'\], the model's inputs are"):
        check(files["two_input16"], reference_model=files["two_input"], inputs=wrong)


def test_a_file_alone_says_nothing_was_checked_and_why(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeport.runtime.backends.registry import backend_unavailable_reason

    if backend_unavailable_reason("onnxruntime-cuda") is None:
        pytest.skip("this machine runs ONNX Runtime CUDA: the file is checked there")
    code, out, err = run_cli(
        capsys,
        "check",
        files["detector"],
        "--backend",
        f"{CPU},onnxruntime-cuda,onnxruntime-tensorrt",
    )
    assert code == 1
    assert "nothing checked: no backend besides the reference can run detector.onnx" in err
    assert f"detector.onnx on {CPU}: it computes the reference" in out
    assert "detector.onnx on onnxruntime-cuda: " in out
    assert "detector.onnx on onnxruntime-tensorrt: " in out


def test_a_file_alone_is_checked_on_openvino_against_onnxruntime(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is the other CPU engine")
    code, out, _ = run_cli(capsys, "check", files["detector"])
    assert code == 0
    assert "| detector.onnx | openvino | passed | `labels` | exact | 0 |" in out


def test_settings_that_do_not_apply_are_refused(files: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"--data: for bundles; .* is a bare onnx file"):
        check(files["detector"], data="digits")
    with pytest.raises(ConfigError, match="--reference stored: for bundles"):
        check(files["detector"], reference="stored")
    with pytest.raises(ConfigError, match=r"--reference-model must be an \.onnx, \.xml, \.pte"):
        check(files["detector"], reference_model=files["detector"].with_suffix(".engine"))
    with pytest.raises(ConfigError, match="--samples must be >= 1"):
        check(files["detector"], samples=0)
    with pytest.raises(ConfigError, match="--samples, --seed: shape synthetic inputs; with --in"):
        check(files["detector"], inputs="in.npz", samples=2, seed=1)


@pytest.mark.parametrize("command", ["check", "inspect", "run"])
def test_what_is_not_a_model_is_a_clear_error(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    code, out, err = run_cli(capsys, command, notes)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {notes} is not a model edgeport can load: expected a bundle")
    assert "Traceback" not in err


@pytest.mark.tensorrt
def test_an_engine_is_checked_against_its_onnx_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "gemm.onnx")
    engine = tmp_path / "gemm.engine"
    rt_engines.build_engine(source, engine)
    with pytest.raises(ConfigError, match="is a TensorRT engine: give --reference-model"):
        check(engine)
    report = check(engine, reference_model=source)
    (run,) = report.checks
    assert run.backend == "tensorrt" and run.precision == "fp32"
    assert run.status in ("passed", "skipped"), run.message()
    if run.status == "skipped":
        assert report.reference is None and run.reason
    assert any("--tolerance" in w for w in report.warnings)  # gemm.engine names no precision


# -- check: bundles of any model -------------------------------------------------------------


def two_input_feeds(count: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((count, 3, 4, 4)).astype(np.float32),
        "ids": rng.integers(0, rt_graphs.VOCAB, (count, 6)),
    }


@pytest.fixture(scope="module")
def two_input_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fp32 and fp16 artifacts of the two-input model, batch 2..4, with 9 stored samples."""
    model = rt_graphs.two_input_model()
    feeds = two_input_feeds(9)
    with load(rt_graphs.save(model, tmp_path_factory.mktemp("src") / "m.onnx")) as fp32:
        outputs = fp32.infer(feeds)
    card = ModelCard(architecture="two_input", task="other")
    root = tmp_path_factory.mktemp("two_input_bundle") / "bundle"
    models = {"fp32": model, "fp16": rt_graphs.fp16_copy(model)}
    return rt_bundles.any_bundle(root, models, card, feeds, outputs, batch=(2, 2, 4))


def test_bundle_of_a_two_input_model_checks_against_its_stored_reference(
    two_input_bundle: Path,
) -> None:
    report = check(two_input_bundle, backends=[CPU])
    assert report.passed, report.verdict
    assert report.reference is not None and report.reference.kind == "stored"
    assert [(c.artifact, c.precision) for c in report.checked] == [
        ("onnx-fp32", "fp32"),
        ("onnx-fp16", "fp16"),
    ]
    fp32, fp16 = report.checked
    assert fp32.count == 9 and fp32.outputs[0].comparison.shape == (9, 8)  # batches 4, 4, 1+1
    assert fp32.outputs[0].comparison.max_abs <= 1e-5 < fp16.outputs[0].comparison.max_abs
    with pytest.raises(ConfigError, match="--reference-model: for bare"):
        check(two_input_bundle, reference_model=two_input_bundle / "model.fp32.onnx")


def test_per_layer_feeds_every_input_of_a_two_input_bundle(
    two_input_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report_path = tmp_path / "check.json"
    code, out, err = run_cli(
        capsys, "check", two_input_bundle, "--backend", CPU, "--per-layer", "--json", report_path
    )
    assert code == 0, err
    layers = read_json(report_path)["per_layer"]
    assert set(layers) == {"onnx-fp16"}
    fp16 = layers["onnx-fp16"]
    assert "error" not in fp16, fp16
    assert fp16["samples"] == 9 and fp16["first_mismatch"] is None
    names = [x["name"] for x in fp16["layers"]]
    assert {"embedded", "pooled", "projected", "fused"} <= set(names)
    assert "Per-layer, onnx-fp16 vs model.fp32.onnx (9 samples)" in out


def test_schema_1_classifier_bundle_still_checks(tmp_path: Path) -> None:
    """A manifest of schema 1 (input_name, input_shape, batch) with inputs.npy, labels.npy and
    logits.npy as its reference."""
    bundle = rt_bundles.gemm_bundle(tmp_path / "b", ("fp32", "fp16"))
    images = rt_graphs.integer_batch(20)
    files = {
        "inputs": images,
        "labels": np.arange(20) % 3,
        "logits": rt_graphs.gemm_reference(images),
    }
    rels = {key: f"reference/{key}.npy" for key in files}
    (bundle / "reference").mkdir()
    for key, array in files.items():
        (bundle / rels[key]).write_bytes(npy_bytes(array))

    def to_schema_1(data: dict) -> None:
        from edgeport.runtime.io import sha256_file

        data["schema_version"] = 1
        for key in ("task", "image_input", "inputs", "outputs", "postprocess", "schema_version"):
            data["card"].pop(key)
        for art in data["artifacts"]:
            spec = art.pop("inputs")[0]
            art.pop("outputs")
            art.update(
                input_name=spec["name"],
                output_name="logits",
                input_shape=spec["shape"],
                batch={"min": 1, "opt": 4, "max": 16},
            )
        data["reference"] = {
            **rels,
            "sha256": {rel: sha256_file(bundle / rel) for rel in rels.values()},
            "count": 20,
        }

    rt_bundles.rewrite_manifest(bundle, to_schema_1)
    report = check(bundle, backends=[CPU])
    assert report.passed, report.verdict
    assert report.reference is not None and report.reference.kind == "stored"
    for run in report.checked:
        (logits,) = run.outputs
        assert logits.kind == "logits" and logits.comparison.accuracy_candidate is not None
        assert logits.comparison.max_abs == 0.0 and run.count == 20
    assert report.to_dict()["reference"]["accuracy"] == pytest.approx(
        float((files["logits"].argmax(1) == files["labels"]).mean())
    )


# -- run -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "feeds"),
    [
        ("detector", {"image": np.linspace(-1, 1, 96, dtype=np.float32).reshape(2, 3, 4, 4)}),
        ("two_input", two_input_feeds(3)),
        (
            "tokens",
            {
                "ids": np.array([[1, 9, 3], [0, 2, 2]]),
                "mask": np.array([[True, False, True], [True, True, False]]),
            },
        ),
    ],
)
def test_run_writes_the_outputs_model_infer_gives(
    name: str,
    feeds: dict[str, np.ndarray],
    files: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs, out = tmp_path / "in.npz", tmp_path / "out" / "result.npz"
    inputs.write_bytes(npz_bytes(feeds))
    code, text, err = run_cli(capsys, "run", files[name], "--inputs", inputs, "--out", out)
    assert code == 0, err
    with load(files[name]) as model:
        expected = model.infer(feeds)
    with np.load(out, allow_pickle=False) as written:
        assert written.files == list(expected)
        for key, array in expected.items():
            assert written[key].dtype == array.dtype
            np.testing.assert_array_equal(written[key], array)
    assert f"inputs from {inputs}" in text
    for key, array in expected.items():
        assert f"| {key} | {array.dtype} | {list(array.shape)} |" in text
    assert f"wrote {out}" in err
    assert not list(out.parent.glob(".*.tmp"))  # written atomically


def test_run_without_inputs_uses_synthetic_ones_and_says_so(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, _ = run_cli(capsys, "run", files["tokens"], *TOKENS, "--json")
    assert code == 0
    report = json.loads(text)
    assert report["inputs"].startswith("no --inputs given: synthetic inputs (seed 0")
    stats = {s["name"]: s for s in report["input_stats"]}
    assert stats["ids"]["shape"] == [2, 5] and stats["mask"]["dtype"] == "bool"
    assert stats["ids"]["min"] >= 0 and stats["ids"]["max"] <= 9
    outputs = {s["name"]: s for s in report["outputs"]}
    assert outputs["hidden"]["shape"] == [2, 5, 4] and outputs["count"]["dtype"] == "int64"
    code, _, err = run_cli(capsys, "run", files["tokens"], "--inputs", "x.npz", *TOKENS)
    assert code == 1 and "--shapes and --value-range shape synthetic inputs" in err


def test_run_reports_non_finite_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n"])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n"])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Log", ["x"], ["y"])], "log", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = rt_graphs.save(model, tmp_path / "log.onnx")
    inputs = tmp_path / "in.npz"
    inputs.write_bytes(npz_bytes({"x": np.array([1.0, np.e, 0.0, -1.0], np.float32)}))
    code, text, err = run_cli(capsys, "run", path, "--inputs", inputs)
    assert code == 0
    assert "| y | float32 | [4] | 0 | 1 | 0.5 | 2 |" in text  # finite values 0 and 1; -inf, nan
    assert "warning: outputs ['y'] contain NaN or Inf" in err


# -- inspect ---------------------------------------------------------------------------------


def test_inspect_lists_the_specs_of_any_model(
    files: dict[str, Path], two_input_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "inspect", files["tokens"])
    assert code == 0
    assert "input ids: int64 [batch, seq] (batch 1..unbounded, seq 1..unbounded)" in out
    assert "input mask: bool [batch, seq]" in out
    assert "output count: int64 [batch] (batch 1..unbounded)" in out
    assert "card: none" in out
    code, out, _ = run_cli(capsys, "inspect", two_input_bundle, "--json")
    report = json.loads(out)
    assert report["card"]["task"] == "other"
    fp16 = {a["name"]: a for a in report["artifacts"]}["onnx-fp16"]
    ids = fp16["inputs"][1]
    assert ids["name"] == "ids" and ids["dtype"] == "int64" and ids["shape"] == ["batch", "seq"]
    assert ids["ranges"][0] == [2, 2, 4]
    assert ids["text"] == "ids: int64 [batch, seq] (batch 2..4, seq 1..unbounded)"
    assert [o["text"] for o in fp16["outputs"]] == ["fused: float32 [batch, 8] (batch 2..4)"]
    code, out, _ = run_cli(capsys, "inspect", two_input_bundle)
    assert "card: two_input, task other" in out
    assert "input image: float32 [batch, 3, 4, 4] (batch 2..4)" in out


def test_bundle_check_of_a_copy_with_a_modified_output_file_is_refused(
    two_input_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = shutil.copytree(two_input_bundle, tmp_path / "b")
    with (bundle / "reference" / "outputs.npz").open("ab") as handle:
        handle.write(b"\0")
    code, _, err = run_cli(capsys, "check", bundle, "--backend", CPU)
    assert code == 1 and "outputs.npz has sha256" in err and "it was modified" in err


# -- real models no one here wrote (make models) ---------------------------------------------


def _thirdparty(name: str) -> Path:
    from thirdparty.models import model_path

    path = model_path(name)
    if not path.is_file():
        pytest.skip(f"{path} is missing: run `make models` (or python tests/thirdparty/models.py)")
    return path


def test_run_and_check_silero_vad_with_its_0d_sample_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three inputs (a 0-d int64 among them, a batch axis that is not the first), two outputs."""
    path = _thirdparty("silero_vad")
    synthetic = ["--shapes", "input:2x512", "--value-range", "sr:16000,16000"]
    code, text, err = run_cli(capsys, "run", path, *synthetic, "--out", tmp_path / "o.npz")
    assert code == 0, err
    assert "| sr | int64 | [] | 16000 | 16000 | 16000 | - |" in text
    assert "| stateN | float32 | [2, 2, 128] |" in text
    copy = shutil.copyfile(path, tmp_path / "silero_copy.onnx")  # fp16 copies break its If
    report = check(
        copy,
        reference_model=path,
        backends=[CPU],
        shapes={"input": (2, 512)},
        value_ranges={"sr": (16000, 16000)},
    )
    (run,) = report.checked
    assert run.passed, run.message()
    assert [(o.name, o.comparison.shape) for o in run.outputs] == [
        ("output", (8, 1)),  # 4 batches of 2, joined
        ("stateN", (8, 2, 128)),  # joined along its first axis, which is not the batch
    ]


@pytest.mark.filterwarnings("ignore:the float32 number:UserWarning")
def test_per_layer_finds_where_an_fp16_ocr_detector_breaks(tmp_path: Path) -> None:
    """PP-OCRv4's detector stores a BatchNorm variance of about 1e8, beyond float16's range:
    onnxconverter_common clamps it to 1e4, and the output is wrong from there on."""
    from edgeport.runtime.cli.check import attach_per_layer

    path = _thirdparty("ppocr_det")
    fp16 = rt_graphs.save(rt_graphs.fp16_copy(onnx.load(str(path))), tmp_path / "det.fp16.onnx")
    report = check(
        fp16, reference_model=path, backends=[CPU], shapes={"x": (1, 3, 64, 64)}, samples=2
    )
    (run,) = report.checked
    assert run.status == "failed" and run.outputs[0].comparison.cosine_min < 0.5
    attach_per_layer(report, samples=2)
    layers = report.per_layer["det.fp16.onnx"]
    assert layers["first_mismatch"] == "batch_norm_0.w_2"
    first = next(x for x in layers["layers"] if x["name"] == "batch_norm_0.w_2")
    assert first["max_abs"] > 9e7  # 97903600 stored as 10000
