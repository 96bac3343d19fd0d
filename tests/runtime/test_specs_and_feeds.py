"""TensorSpec, FeedCheck and the feeds helpers on their own, plus card v2 and schema-1
compatibility: the general model of inputs and outputs that every backend sits behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import rt_graphs
from onnx import TensorProto, helper, numpy_helper

from edgeport.runtime import load
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.errors import ConfigError, InputError, ModelLoadError
from edgeport.runtime.feeds import (
    load_npz,
    parse_profiles,
    parse_shapes,
    parse_value_ranges,
    resolve_shapes,
    synthetic_feeds,
)
from edgeport.runtime.reference import npz_bytes
from edgeport.runtime.specs import UNBOUNDED, FeedCheck, TensorSpec

IMAGE = TensorSpec(
    "image", "float32", ("batch", 3, 4, 4), ((1, 2, 8), (3, 3, 3), (4, 4, 4), (4, 4, 4))
)
IDS = TensorSpec("ids", "int64", ("batch", "seq"), ((1, 2, 8), (1, 4, 16)), value_range=(0, 9))
MASK = TensorSpec("mask", "bool", ("batch", "seq"))


def feeds(batch: int = 2, seq: int = 3) -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((batch, 3, 4, 4), np.float32),
        "ids": np.ones((batch, seq), np.int64),
        "mask": np.ones((batch, seq), bool),
    }


@pytest.fixture(scope="module")
def check() -> FeedCheck:
    return FeedCheck([IMAGE, IDS, MASK])


def test_good_feeds_come_back_contiguous_in_model_order(check: FeedCheck) -> None:
    given = feeds()
    given["image"] = np.zeros((3, 4, 4, 2), np.float32).transpose(3, 0, 1, 2)  # not contiguous
    reordered = {"mask": given["mask"], "ids": given["ids"], "image": given["image"]}
    out = check(reordered)
    assert [a.shape for a in out] == [(2, 3, 4, 4), (2, 3), (2, 3)]
    assert all(a.flags.c_contiguous for a in out)


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (
            lambda f: f.pop("ids"),
            r"expected inputs 'image', 'ids', 'mask'; got .*missing \['ids'\]",
        ),
        (lambda f: f.update(IDS=f["ids"]), r"unknown \['IDS'\]\); names are case-sensitive"),
        (
            lambda f: f.update(ids=f["ids"].astype(np.int32)),
            r"input 'ids': expected dtype int64, got int32 .*x\.astype\(np\.int64\)",
        ),
        (lambda f: f.update(ids=[[1, 2, 3]]), r"input 'ids': expected a numpy array .* got list"),
        (lambda f: f.update(ids=np.ones(3, np.int64)), r"input 'ids': expected 2-D .* got 1-D"),
        (
            lambda f: f.update(image=np.zeros((2, 1, 4, 4), np.float32)),
            r"input 'image': axis 1 must be 3, got 1",
        ),
        (
            lambda f: f.update(ids=np.ones((2, 17), np.int64), mask=np.ones((2, 17), bool)),
            r"input 'ids': axis 1 \(seq\) is 17, outside the model's range 1\.\.16 .*split",
        ),
        (
            lambda f: f.update(mask=np.ones((2, 5), bool)),
            r"input 'mask' has seq=5 on axis 1, but input 'ids' has seq=3 .*must agree",
        ),
        (
            lambda f: f["image"].__setitem__((1, 2, 0, 3), np.nan),
            r"input 'image': expected finite values, got 1 NaN and 0 Inf .*sample 1",
        ),
        (
            lambda f: f["ids"].__setitem__((0, 2), 10),
            r"input 'ids': values must lie in \[0, 9\] .*1 outside, e\.g\. 10 at index \(0, 2\)",
        ),
    ],
)
def test_bad_feeds_are_refused_naming_the_input(
    check: FeedCheck, edit: object, pattern: str
) -> None:
    given = feeds()
    edit(given)  # type: ignore[operator]
    with pytest.raises(InputError, match=pattern):
        check(given)


def test_huge_finite_values_are_not_mistaken_for_inf(check: FeedCheck) -> None:
    given = feeds()
    given["image"][:] = 3e38  # the sum of squares overflows; the values are finite
    check(given)


def test_spec_describe_and_round_trip() -> None:
    assert IDS.describe() == "ids: int64 [batch, seq] (batch 1..8, seq 1..16, values 0..9)"
    assert (
        TensorSpec("x", "float32", (None, 3)).describe()
        == "x: float32 [?, 3] (axis 0 1..unbounded)"
    )
    for spec in (IMAGE, IDS, MASK):
        assert TensorSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"dtype": "float8"}, r"dtype must be one of"),
        ({"shape": (1, -2)}, r"dimension 1 must lie in 0\.\."),
        ({"shape": (4,), "ranges": ((1, 1, 2),)}, r"dimension 0 is fixed at 4 but its range"),
        ({"shape": ("n",), "ranges": ((3, 2, 1),)}, r"needs 0 <= min <= opt <= max"),
        ({"shape": ("n",), "ranges": ((1, 1, 1), (1, 1, 1))}, r"2 dimension ranges for a rank-1"),
    ],
)
def test_spec_refuses_inconsistent_fields(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        TensorSpec(**{"name": "x", "dtype": "float32", "shape": ("n",), **kwargs})  # type: ignore[arg-type]


def test_feeds_parsers() -> None:
    assert parse_shapes("image:1x3x4x4, ids:1x16") == {"image": (1, 3, 4, 4), "ids": (1, 16)}
    assert parse_shapes("sr:") == {"sr": ()}
    assert parse_profiles(["ids:1x1:4x16:8x64"]) == {"ids": ((1, 4, 8), (1, 16, 64))}
    assert parse_value_ranges(["ids:0,999", "x:-1.5,1.5"]) == {"ids": (0, 999), "x": (-1.5, 1.5)}
    for bad, call in (
        ("ids=1x16", parse_shapes),
        ("ids:1xa", parse_shapes),
        ("ids:1x1:4x16", parse_profiles),
        ("ids:4x4:1x1:8x8", parse_profiles),
    ):
        with pytest.raises(ConfigError):
            call(bad)
    with pytest.raises(ConfigError, match="NAME:LOW,HIGH"):
        parse_value_ranges(["ids:5,1"])


def test_synthetic_feeds_follow_the_specs() -> None:
    specs = [IMAGE, IDS, MASK]
    shapes = resolve_shapes(specs, {"ids": (4, 7)})
    assert shapes == {"image": (4, 3, 4, 4), "ids": (4, 7), "mask": (4, 7)}
    made = synthetic_feeds(specs, {"ids": (4, 7)}, seed=1)
    assert [a.dtype for a in made.values()] == [np.float32, np.int64, np.bool_]
    assert made["ids"].min() >= 0 and made["ids"].max() <= 9  # the declared value range
    FeedCheck(specs)(made)  # what it makes, the check accepts
    again = synthetic_feeds(specs, {"ids": (4, 7)}, seed=1)
    assert all(np.array_equal(made[k], again[k]) for k in made)
    bounded = synthetic_feeds([IDS], {"ids": (2, 2)}, {"ids": (5, 6)})["ids"]
    assert set(np.unique(bounded)) <= {5, 6}
    with pytest.raises(ConfigError, match=r"--shapes names unknown inputs \['nope'\]"):
        resolve_shapes(specs, {"nope": (1,)})
    with pytest.raises(ConfigError, match=r"--shapes ids: 3 dimensions for a rank-2 input"):
        resolve_shapes(specs, {"ids": (1, 2, 3)})


def test_load_npz_checks_names_and_refuses_pickles(tmp_path: Path) -> None:
    good = tmp_path / "in.npz"
    good.write_bytes(npz_bytes(feeds()))
    assert list(load_npz(good, [IMAGE, IDS, MASK])) == ["image", "ids", "mask"]
    with pytest.raises(InputError, match=r"holds arrays .* the model's inputs are"):
        load_npz(good, [IMAGE])
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, ids=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="object arrays are refused"):
        load_npz(pickled)
    with pytest.raises(InputError, match="inputs file not found"):
        load_npz(tmp_path / "missing.npz")


# -- the card and the manifest: version 2, and what version 1 wrote -----------------------------


def _token_model(card: ModelCard | None = None) -> onnx.ModelProto:
    """ids int64 [batch, seq] -> Gather from a [10, 2] table, summed over seq: [batch, 2]."""
    table = np.arange(20, dtype=np.float32).reshape(10, 2)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    out = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 2])
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("ReduceSum", ["emb", "axes"], ["pooled"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tokens", [ids], [out], [numpy_helper.from_array(table, "table"), axes]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    if card is not None:
        helper.set_model_props(model, {ONNX_METADATA_KEY: card.to_json()})
    return model


def test_a_card_in_onnx_metadata_declares_value_ranges(tmp_path: Path) -> None:
    card = ModelCard(
        architecture="tokens",
        task="other",
        inputs=(TensorSpec("ids", "int64", ("batch", "seq"), value_range=(0, 9)),),
        outputs=(TensorSpec("pooled", "float32", ("batch", 2)),),
    )
    path = rt_graphs.save(_token_model(card), tmp_path / "tokens.onnx")
    with load(path, threads=1) as model:
        assert model.card == card and model.inputs[0].value_range == (0, 9)
        ids = np.array([[0, 9, 1]], np.int64)
        pooled = model.infer({"ids": ids})["pooled"]
        assert np.array_equal(pooled, np.arange(20).reshape(10, 2)[ids[0]].sum(0)[None])
        with pytest.raises(InputError, match=r"values must lie in \[0, 9\]"):
            model.infer({"ids": np.array([[10]], np.int64)})
        with pytest.raises(ModelLoadError, match=r"no model card for images"):
            model.predict(np.zeros((4, 4), np.uint8))


def test_non_image_cards_and_their_checks() -> None:
    ModelCard(architecture="x", task="other")
    ModelCard(architecture="x", task="detection", num_classes=2, class_names=("a", "b"))
    with pytest.raises(InputError, match="a classifier needs its class names"):
        ModelCard(architecture="x", num_classes=2)
    with pytest.raises(InputError, match=r"an image model needs .*\['std'\] missing"):
        ModelCard(architecture="x", task="other", in_channels=3, input_size=(4, 4), mean=(0,) * 3)
    with pytest.raises(InputError, match="task must be one of"):
        ModelCard(architecture="x", task="ranking")
    with pytest.raises(ConfigError, match="describes no image input"):
        _ = ModelCard(architecture="x", task="other").input_shape


SCHEMA_1_MANIFEST = {
    "schema_version": 1,
    "created": "2026-11-28T00:00:00+00:00",
    "versions": {"edgeport-export": "0.1.0"},
    "card": {
        "architecture": "tiny_test",
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "in_channels": 1,
        "input_size": [2, 2],
        "mean": [0.0],
        "std": [1.0],
        "arch_args": {},
        "layout": "NCHW",
        "value_range": [0.0, 1.0],
        "interpolation": "bilinear",
        "schema_version": 1,
    },
    "export": {},
    "reference": None,
    "artifacts": [
        {
            "name": "onnx-fp32",
            "format": "onnx",
            "precision": "fp32",
            "path": "model.fp32.onnx",
            "sha256": "",
            "size_bytes": 0,
            "input_name": "input",
            "output_name": "logits",
            "input_shape": ["batch", 1, 2, 2],
            "batch": {"min": 1, "opt": 4, "max": 16},
            "tools": {"onnx": "1.19.0"},
            "parity": {"passed": True, "failures": []},
            "engine": None,
            "source": None,
        }
    ],
}


def test_a_schema_1_bundle_still_loads_and_runs(tmp_path: Path) -> None:
    from edgeport.runtime.io import sha256_file

    root = tmp_path / "old"
    path = rt_graphs.save(rt_graphs.gemm_model(), root / "model.fp32.onnx")
    data = json.loads(json.dumps(SCHEMA_1_MANIFEST))
    data["artifacts"][0].update(sha256=sha256_file(path), size_bytes=path.stat().st_size)
    (root / "manifest.json").write_text(json.dumps(data))
    manifest = Manifest.load(root)
    (art,) = manifest.artifacts
    assert art.inputs[0].shape == ("batch", 1, 2, 2) and art.batch.max == 16
    with load(root, threads=1) as model:
        batch = rt_graphs.integer_batch(3)
        assert np.array_equal(model.run(batch), rt_graphs.gemm_reference(batch))
        assert model.batch_range.max == 16 and model.outputs[0].shape == ("batch", 3)
        assert model.inputs[0].dim_range(0) == (1, 4, 16)
        with pytest.raises(
            InputError, match=r"batch size 17 is outside this model.s range 1\.\.16"
        ):
            model.run(rt_graphs.integer_batch(17))
    assert Manifest.from_dict(manifest.to_dict()).artifacts == manifest.artifacts


def test_unbounded_dimension_constant() -> None:
    assert TensorSpec("x", "float32", (None,)).dim_range(0) == (1, 1, UNBOUNDED)


ONNX_TYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
    "float64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8,
    "uint8": TensorProto.UINT8,
    "int16": TensorProto.INT16,
    "int32": TensorProto.INT32,
    "int64": TensorProto.INT64,
    "bool": TensorProto.BOOL,
}


@pytest.mark.parametrize("dtype", list(ONNX_TYPES))
def test_every_dtype_goes_through_onnxruntime_unchanged(tmp_path: Path, dtype: str) -> None:
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
        np_dtype = np.dtype(ml_dtypes.bfloat16)
    else:
        np_dtype = np.dtype(dtype)
    x = helper.make_tensor_value_info("x", ONNX_TYPES[dtype], ["n", 3])
    y = helper.make_tensor_value_info("y", ONNX_TYPES[dtype], ["n", 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = rt_graphs.save(model, tmp_path / f"{dtype}.onnx")
    values = np.array([[0, 1, 0], [1, 1, 0]]).astype(np_dtype)
    with load(path, threads=1) as opened:
        assert opened.inputs[0].dtype == dtype and opened.outputs[0].dtype == dtype
        out = opened.infer({"x": values})["y"]
        assert out.dtype == np_dtype and np.array_equal(out, values)
        if dtype != "float32":
            with pytest.raises(InputError, match=rf"expected dtype {dtype}, got float32"):
                opened.infer({"x": values.astype(np.float32)})
