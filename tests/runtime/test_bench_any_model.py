"""``edgeport bench`` on models that are not edgeport classifiers: bare ONNX files with several
inputs of several dtypes, a detector-shaped bundle with several outputs, .npz and image inputs,
engines, and paths that are no model at all. Real ONNX Runtime sessions, tiny timings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import rt_engines
import rt_graphs
from onnx import TensorProto, helper, numpy_helper

from edgeport.runtime.bundle import Artifact, Manifest
from edgeport.runtime.card import ModelCard
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError
from edgeport.runtime.io import sha256_file
from edgeport.runtime.reference import npz_bytes
from edgeport.runtime.specs import TensorSpec
from edgeport.runtime.tools.bench import BenchSettings, TimingConfig, benchmark
from edgeport.runtime.tools.bench_result import CSV_COLUMNS, BenchResult
from edgeport.runtime.tools.report import bench_markdown, validate_bench_dict

ORT = ("onnxruntime-cpu",)  # one engine per test; test_openvino_rows_beside_onnxruntime has both
TINY = ["--warmup-s", "0", "--iterations", "5", "--threads", "1", "--backend", ORT[0]]
QUICK = TimingConfig(warmup_s=0.0, iterations=5)
TABLE_ROWS = 10


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", rt_graphs.OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return rt_graphs.save(model, path)


def two_input_model(path: Path) -> Path:
    """y = x + mean over the sequence of table[ids]: float x [N, 4], int64 ids [N, S] < 10."""
    table = np.arange(TABLE_ROWS * 4, dtype=np.float32).reshape(TABLE_ROWS, 4) / 10
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Add", ["x", "pooled"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "S"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(table, "table")],
    )
    return _save(graph, path)


def detector_model(path: Path) -> Path:
    """A detector's output shapes from any image x [N, 3, H, W]: boxes [N, 2, 4] (float),
    scores [N, 2] (float) and labels [N, 2] (int64)."""
    rng = np.random.default_rng(0)
    w_box = rng.standard_normal((3, 8)).astype(np.float32)
    w_score = rng.standard_normal((3, 2)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["feat"], axis=1),
        helper.make_node("MatMul", ["feat", "w_box"], ["flat_boxes"]),
        helper.make_node("Reshape", ["flat_boxes", "box_shape"], ["boxes"]),
        helper.make_node("MatMul", ["feat", "w_score"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("ArgMax", ["boxes"], ["labels"], axis=2, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 2, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", 2]),
        ],
        [
            numpy_helper.from_array(w_box, "w_box"),
            numpy_helper.from_array(w_score, "w_score"),
            numpy_helper.from_array(np.array([0, 2, 4], np.int64), "box_shape"),
        ],
    )
    return _save(graph, path)


@pytest.fixture(scope="module")
def two_input_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_input_model(tmp_path_factory.mktemp("two") / "two_inputs.onnx")


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the detector with stored reference inputs and outputs (from ONNX Runtime)
    but no PyTorch weights, as a user's own model exported by hand would be."""
    root = tmp_path_factory.mktemp("det") / "bundle"
    detector_model(root / "model.fp32.onnx")
    inputs = {"x": np.random.default_rng(1).standard_normal((6, 3, 16, 16)).astype(np.float32)}
    session = ort.InferenceSession(str(root / "model.fp32.onnx"))
    outputs = dict(zip(("boxes", "scores", "labels"), session.run(None, inputs), strict=True))
    (root / "reference").mkdir()
    (root / "reference" / "inputs.npz").write_bytes(npz_bytes(inputs))
    (root / "reference" / "outputs.npz").write_bytes(npz_bytes(outputs))
    specs_in = (TensorSpec("x", "float32", ("N", 3, "H", "W")),)
    specs_out = (
        TensorSpec("boxes", "float32", ("N", 2, 4)),
        TensorSpec("scores", "float32", ("N", 2)),
        TensorSpec("labels", "int64", ("N", 2)),
    )
    path = root / "model.fp32.onnx"
    art = Artifact(
        "onnx-fp32", "onnx", "fp32", path.name, sha256_file(path), path.stat().st_size,
        specs_in, specs_out,
    )  # fmt: skip
    refs = {"inputs": "reference/inputs.npz", "outputs": "reference/outputs.npz"}
    refs_sha = {rel: sha256_file(root / rel) for rel in refs.values()}
    card = ModelCard(architecture="tiny_detector", num_classes=0, task="detection")
    Manifest(card=card, artifacts=(art,), reference={**refs, "sha256": refs_sha}).save(root)
    return root


def test_bare_two_input_onnx_with_two_shape_sets(two_input_onnx: Path, tmp_path: Path) -> None:
    paths = {k: tmp_path / f"bench.{k}" for k in ("json", "csv", "md")}
    code = main(
        ["bench", str(two_input_onnx), "--shapes", "x:1x4,ids:1x16", "--shapes", "x:4x4,ids:4x8"]
        + ["--value-range", f"ids:0,{TABLE_ROWS - 1}", *TINY]
        + [f"--{k}={paths[k]}" for k in ("json", "csv")]
        + ["--markdown", str(paths["md"])]
    )
    assert code == 0
    data = json.loads(paths["json"].read_text())
    assert validate_bench_dict(data) == []
    assert [(r["backend"], r["batch"], r["shapes"]) for r in data["rows"]] == [
        ("onnxruntime-cpu", 1, {"x": [1, 4], "ids": [1, 16]}),
        ("onnxruntime-cpu", 4, {"x": [4, 4], "ids": [4, 8]}),
    ]
    for row in data["rows"]:
        assert row["iterations"] == 5 and row["artifact"] == "two_inputs.onnx"
        assert row["parity"] == {"top1_agreement": None, "max_abs": None, "passed": None}
        assert row["samples_per_s"] == pytest.approx(
            row["batch"] * 1000 / row["latency_ms"]["mean"]
        )
    assert data["model"]["kind"] == "onnx" and data["model"]["task"] is None
    assert [s["name"] for s in data["model"]["inputs"]] == ["x", "ids"]
    assert data["config"]["value_ranges"] == {"ids": [0, TABLE_ROWS - 1]}
    assert data["config"]["input_data"].startswith("synthetic (seed 0")
    assert (
        data["parity"]["reference"] == "no reference: a bare ONNX file stores no reference outputs"
    )
    (torch_skip,) = [s for s in data["skipped"] if s["backend"] == "torch"]
    assert torch_skip["reason"].startswith("bare ONNX file: there is no PyTorch model")
    lines = list(csv.DictReader(paths["csv"].open()))
    assert tuple(lines[0]) == CSV_COLUMNS and lines[1]["shapes"] == "x:4x4 ids:4x8"
    markdown = paths["md"].read_text()
    assert "| backend | precision | device | shapes | batch |" in markdown
    assert "| onnxruntime-cpu | fp32 | cpu | x:1x4 ids:1x16 | 1 |" in markdown
    assert "Parity: no reference: a bare ONNX file" in markdown


def test_value_ranges_reach_the_synthetic_inputs(two_input_onnx: Path) -> None:
    """ids beyond the embedding table make Gather fail: the range is what the model was fed."""
    settings = BenchSettings(
        backends=ORT,
        shapes=({"ids": (2, 3)},),
        value_ranges={"ids": (50, 60)},
        timing=QUICK,
        baselines=(),
    )
    result = benchmark(two_input_onnx, settings)
    assert result.rows == []
    (skip,) = [s for s in result.skipped if s.backend == "onnxruntime-cpu"]
    assert skip.shapes == {"x": (2, 4), "ids": (2, 3)} and "indices element out of" in skip.reason
    with pytest.raises(ConfigError, match=r"--value-range names unknown inputs \['idz'\]"):
        benchmark(
            two_input_onnx, BenchSettings(backends=ORT, value_ranges={"idz": (0, 1)}, baselines=())
        )
    with pytest.raises(ConfigError, match=r"no artifacts of precision \['int8'\]"):
        benchmark(two_input_onnx, BenchSettings(backends=ORT, precisions=("int8",)))


def test_npz_inputs_are_tiled_to_each_batch(two_input_onnx: Path, tmp_path: Path) -> None:
    npz = tmp_path / "inputs.npz"
    rng = np.random.default_rng(0)
    np.savez(
        npz,
        x=rng.standard_normal((3, 4)).astype(np.float32),
        ids=rng.integers(0, TABLE_ROWS, (3, 5)),
    )
    settings = BenchSettings(
        backends=ORT, inputs=str(npz), batches=(2, 5), timing=QUICK, baselines=()
    )
    result = benchmark(two_input_onnx, settings)
    assert [dict(r.shapes) for r in result.rows] == [
        {"x": (2, 4), "ids": (2, 5)},
        {"x": (5, 4), "ids": (5, 5)},
    ]
    assert result.config["input_data"] == "inputs.npz (x, ids)"
    (row,) = benchmark(
        two_input_onnx, BenchSettings(backends=ORT, inputs=str(npz), timing=QUICK)
    ).rows
    assert row.batch == 3  # the file's own shapes
    with pytest.raises(ConfigError, match=r"only axis 0 \(samples\) is tiled or cut"):
        benchmark(
            two_input_onnx, BenchSettings(backends=ORT, inputs=str(npz), shapes=({"ids": (1, 7)},))
        )
    np.savez(npz, x=np.zeros((3, 4), np.float32))
    with pytest.raises(ConfigError, match=r"has no array for input 'ids'"):
        benchmark(two_input_onnx, BenchSettings(backends=ORT, inputs=str(npz), baselines=()))


def test_detector_bundle_parity_per_output(detector_bundle: Path) -> None:
    settings = BenchSettings(backends=ORT, batches=(1, 4), timing=QUICK, threads=1)
    result = benchmark(detector_bundle, settings)
    assert [(r.batch, dict(r.shapes)) for r in result.rows] == [
        (1, {"x": (1, 3, 16, 16)}),
        (4, {"x": (4, 3, 16, 16)}),
    ]  # H and W from the stored reference inputs
    for row in result.rows:
        assert row.parity_passed is True and row.parity_top1 is None
        assert row.parity_max_abs is not None and row.parity_max_abs <= 1e-5
    (found,) = result.parity["candidates"].values()
    assert found["count"] == 4  # whole chunks of the largest batch: 4 of the 6 samples
    assert {k: v["kind"] for k, v in found["outputs"].items()} == {
        "boxes": "tensor",
        "scores": "tensor",
        "labels": "exact",
    }
    assert result.config["input_data"] == "bundle reference inputs (6)"
    (skip,) = [s for s in result.skipped if s.backend == "torch"]
    assert skip.reason.startswith("the bundle has no PyTorch weights")
    assert result.warnings == []  # eager was never possible here: no "did not run" warning
    data = result.to_dict()
    assert validate_bench_dict(data) == []
    assert data["model"]["name"] == "tiny_detector" and data["model"]["task"] == "detection"
    assert "Parity: the bundle's stored reference outputs (6 samples" in bench_markdown(result)


def test_detector_with_synthetic_inputs_at_other_sizes(detector_bundle: Path) -> None:
    shapes = ({"x": (1, 3, 32, 48)},)
    settings = BenchSettings(backends=ORT, shapes=shapes, timing=QUICK, baselines=())
    result = benchmark(detector_bundle, settings)
    (row,) = result.rows
    assert dict(row.shapes) == {"x": (1, 3, 32, 48)}
    assert result.config["input_data"].startswith("synthetic")  # shape sets ask for other data
    assert row.parity_passed is True  # parity still runs on the stored reference inputs
    with pytest.raises(ConfigError, match=r"only axis 0 \(samples\) is tiled or cut"):
        benchmark(detector_bundle, BenchSettings(backends=ORT, inputs="reference", shapes=shapes))


def test_images_are_preprocessed_by_the_card(
    cnn_onnx: Path, digit_images: list[Path], two_input_onnx: Path
) -> None:
    folder = digit_images[0].parent
    settings = BenchSettings(
        backends=ORT, images=(str(folder),), batches=(2,), timing=QUICK, baselines=()
    )
    (row,) = benchmark(cnn_onnx, settings).rows
    assert dict(row.shapes) == {"input": (2, 3, 32, 32)}
    with pytest.raises(ConfigError, match="images need a model card"):
        benchmark(two_input_onnx, BenchSettings(backends=ORT, images=(str(folder),)))
    with pytest.raises(ConfigError, match="image file or folder not found"):
        benchmark(cnn_onnx, BenchSettings(backends=ORT, images=(str(folder / "missing.png"),)))


def test_paths_that_are_no_model_get_a_clear_error(tmp_path: Path, capsys) -> None:
    text = tmp_path / "model.txt"
    text.write_text("not a model")
    assert main(["bench", str(text)]) == 1
    assert "is not a model edgeport can load" in capsys.readouterr().err
    assert main(["bench", str(tmp_path)]) == 1
    assert "is not a bundle: manifest.json not found" in capsys.readouterr().err
    assert main(["bench", str(tmp_path / "missing.onnx")]) == 1
    assert "no such file or directory" in capsys.readouterr().err


@pytest.mark.tensorrt
def test_a_bare_engine_is_benchmarked_or_says_why_not(tmp_path: Path) -> None:
    onnx_path = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "gemm.onnx")
    engine = tmp_path / "gemm.fp32.engine"
    rt_engines.build_engine(onnx_path, engine)
    result = benchmark(engine, BenchSettings(batches=(2,), timing=QUICK))
    reasons = {s.backend: s.reason for s in result.skipped}
    assert reasons["torch"].startswith("bare TensorRT engine")
    assert result.rows or "tensorrt" in reasons  # runs on a GPU it was built for, else why not
    assert all(r.precision == "fp32" for r in result.rows)


def test_schema_1_results_are_still_read(detector_bundle: Path) -> None:
    data = benchmark(
        detector_bundle, BenchSettings(backends=ORT, batches=(1,), timing=QUICK)
    ).to_dict()
    old = {k: v for k, v in data.items() if k not in ("model", "profiles")}
    old |= {"schema_version": 1, "bundle": {"architecture": "tiny_detector"}}
    old["rows"] = [
        {**{k: v for k, v in r.items() if k not in ("samples_per_s", "shapes")}}
        | {"throughput_ips": r["samples_per_s"]}
        for r in data["rows"]
    ]
    old["skipped"] = [{k: v for k, v in s.items() if k != "shapes"} for s in data["skipped"]]
    again = BenchResult.from_dict(old)
    assert again.model == {"architecture": "tiny_detector"}
    assert again.rows[0].throughput == data["rows"][0]["samples_per_s"]
    assert dict(again.rows[0].shapes) == {}


def test_openvino_rows_beside_onnxruntime(two_input_onnx: Path) -> None:
    pytest.importorskip("openvino", reason="the openvino backend")
    settings = BenchSettings(shapes=({"x": (2, 4), "ids": (2, 3)},), timing=QUICK, baselines=())
    rows = benchmark(two_input_onnx, settings).rows
    assert {r.backend for r in rows} == {"onnxruntime-cpu", "openvino", "auto"}  # all, and auto
