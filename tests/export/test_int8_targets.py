"""Int8 per target engine: what each recipe makes, what the engines run in float, and the
keep-only-when-it-wins loop on models built to make int8 wrong or never fast enough."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from export_helpers import digits_card, edgeport_command, export_classifier
from export_models import MobileBlockNet, with_outlier_channel
from thirdparty.models import model_path
from torch import nn

from edgeport.export import export_module
from edgeport.export.int8 import INT8_TARGETS, Int8Policy, resolve_targets
from edgeport.export.int8.fallback import LayerNames, costly_layers, layer_costs
from edgeport.export.int8.float_convs import float_convs_onnxruntime, float_convs_openvino
from edgeport.export.int8.prepare import prepare_fp32
from edgeport.export.int8.recipes import (
    cpu_dot_product,
    has_attention,
    normalizes_by_arithmetic,
)
from edgeport.export.onnx import save_model
from edgeport.export.quantize import quantize_int8
from edgeport.export.settings import INT8_ENGINES, ExportSettings
from edgeport.runtime.bundle import TARGETS, Manifest
from edgeport.runtime.errors import ConfigError
from edgeport.train.data import load_eval_arrays

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return load_eval_arrays("digits", digits_card(), split="train", limit=96).images


@pytest.fixture(scope="module")
def block_net(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """MobileBlockNet's fp32 ONNX file and its prepared copy (HardSwish, a depthwise conv, an
    SE gate and a residual add: what the recipes must fuse)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("block_net")
    fp32 = save_model(
        export_classifier(MobileBlockNet().eval(), digits_card()).model, folder / "fp32.onnx"
    )
    return fp32, prepare_fp32(fp32, folder / "prepared.onnx")


@pytest.fixture(scope="module")
def recipes_made(
    block_net: tuple[Path, Path], calibration: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The block net quantized by every target's recipe."""
    folder = tmp_path_factory.mktemp("recipes")
    made = {}
    for target in INT8_ENGINES:
        made[target] = folder / INT8_TARGETS[target].filename
        quantize_int8(
            block_net[1],
            made[target],
            digits_card(),
            [{"input": calibration}],
            target=target,
            prepared=True,
        )
    return made


def test_every_engine_family_has_a_recipe_and_an_artifact_name() -> None:
    assert tuple(INT8_TARGETS) == INT8_ENGINES and set(INT8_ENGINES) <= set(TARGETS)
    names = [t.artifact for t in INT8_TARGETS.values()]
    assert names == ["onnx-int8", "onnx-int8-openvino", "onnx-int8-tensorrt"]
    assert len({t.filename for t in INT8_TARGETS.values()}) == 3


def test_preparation_keeps_hardswish_whole(block_net: tuple[Path, Path]) -> None:
    ops = [n.op_type for n in onnx.load(str(block_net[1])).graph.node]
    assert ops.count("HardSwish") == 2 and "HardSigmoid" not in ops
    assert all(n.name for n in onnx.load(str(block_net[1])).graph.node)


def test_preparation_leaves_nothing_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PP-OCR's detector makes ONNX Runtime's symbolic shape inference give up, which then
    saves its half-inferred graph where the process runs."""
    detector = model_path("ppocr_det")
    if not detector.is_file():
        pytest.skip(f"{detector} is missing: run `make models`")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    prepared = prepare_fp32(detector, tmp_path / "prepared.onnx")
    assert onnx.load(str(prepared)).graph.node
    assert list(work.iterdir()) == [] and Path.cwd() == work


def test_onnxruntime_runs_every_convolution_of_its_file_in_int8(
    recipes_made: dict[str, Path],
) -> None:
    """ONNX Runtime's own form leaves no convolution in float after its optimizer; the
    symmetric TensorRT form (no Q after a convolution) leaves every one in float there."""
    ours = float_convs_onnxruntime(recipes_made["onnxruntime"])
    assert (ours.float, ours.total) == (0, 6)
    tensorrt_form = float_convs_onnxruntime(recipes_made["tensorrt"])
    assert tensorrt_form.float == tensorrt_form.total == 6
    assert "HardSwish" in {
        n.op_type for n in onnx.load(str(recipes_made["onnxruntime"])).graph.node
    }


def test_openvino_runs_the_nncf_file_in_int8(
    block_net: tuple[Path, Path], recipes_made: dict[str, Path]
) -> None:
    assert float_convs_openvino(block_net[0]).float == 6  # fp32 itself: all in float
    counted = float_convs_openvino(recipes_made["openvino"])
    assert counted.total == 6 and counted.float <= 2  # at most the SE gate's pair


def test_tensorrt_form_quantizes_the_residual_input_of_the_add(
    recipes_made: dict[str, Path],
) -> None:
    model = onnx.load(str(recipes_made["tensorrt"]))
    producers = {out: node for node in model.graph.node for out in node.output}
    (add,) = [n for n in model.graph.node if n.op_type == "Add"]
    kinds = sorted(producers[name].op_type for name in add.input)
    assert kinds == ["Conv", "DequantizeLinear"]  # the projection, and the stem's Q/DQ pair


def test_profiled_kernels_are_attributed_to_the_fp32_layers(
    block_net: tuple[Path, Path], recipes_made: dict[str, Path], calibration: np.ndarray
) -> None:
    """ONNX Runtime renames what it fuses (``relu_nchwc``, ``..._token_3``); every convolution
    kernel of both files still lands on a convolution of the fp32 model."""
    names = LayerNames.of(block_net[1])
    costs = layer_costs(
        "onnxruntime-cpu",
        block_net[1],
        recipes_made["onnxruntime"],
        names,
        {"input": calibration[:1]},
    )
    convs = {n.name for n in onnx.load(str(block_net[1])).graph.node if n.op_type == "Conv"}
    attributed = {c.layer for c in costs}
    assert convs <= attributed
    assert all(c.fp32_us > 0 and c.int8_us > 0 for c in costs if c.layer in convs)
    chosen = costly_layers(costs, exclude=(), limit=2)
    assert 1 <= len(chosen) <= 2 and all(costs[0].extra_us >= c.extra_us for c in costs)


def _graph(nodes: list[onnx.NodeProto], weights: tuple[str, ...] = ()) -> onnx.ModelProto:
    vector = onnx.helper.make_tensor_value_info
    inputs = [vector("x", onnx.TensorProto.FLOAT, [1, 4, 8])]
    constants = [onnx.numpy_helper.from_array(np.ones((8, 8), np.float32), w) for w in weights]
    output = vector(nodes[-1].output[0], onnx.TensorProto.FLOAT, None)
    graph = onnx.helper.make_graph(nodes, "g", inputs, [output], initializer=constants)
    return onnx.helper.make_model(graph)


def test_graphs_int8_activations_break_are_recognised() -> None:
    node = onnx.helper.make_node
    layer_norm = _graph(
        [
            node("ReduceMean", ["x"], ["mean"], axes=[-1]),
            node("Sub", ["x", "mean"], ["centred"]),
            node("Mul", ["centred", "centred"], ["y"]),
        ]
    )
    attention = _graph([node("MatMul", ["x", "x"], ["y"])])
    dense = _graph(
        [node("MatMul", ["x", "w"], ["h"]), node("Softmax", ["h"], ["y"])], weights=("w",)
    )
    assert normalizes_by_arithmetic(layer_norm) and not has_attention(layer_norm)
    assert has_attention(attention) and not normalizes_by_arithmetic(attention)
    # a classifier's closing Softmax after a weighted MatMul is neither
    assert not has_attention(dense) and not normalizes_by_arithmetic(dense)


def test_cpu_dot_product_decides_the_weight_bits() -> None:
    assert cpu_dot_product("flags : fpu sse avx2 avx512f avx512_vnni") == "vnni"
    assert cpu_dot_product("flags : fpu sse avx2 amx_int8") == "vnni"
    assert cpu_dot_product("flags : fpu sse avx2 fma") == "avx2"


def test_targets_resolve_to_what_can_be_made() -> None:
    assert resolve_targets(None, tensorrt=False) == (("onnxruntime", "openvino"), {})
    assert resolve_targets(None, tensorrt=True)[0] == ("onnxruntime", "openvino", "tensorrt")
    assert resolve_targets(("tensorrt",), tensorrt=False) == (("tensorrt",), {})
    assert ExportSettings(int8_targets="openvino, onnxruntime").int8_targets == (
        "onnxruntime",
        "openvino",
    )
    with pytest.raises(ConfigError, match="unknown int8 target 'coreml'; choose from"):
        ExportSettings(int8_targets="coreml")
    with pytest.raises(ConfigError, match="add tensorrt to --int8-targets"):
        ExportSettings(precisions="int8", tensorrt=True, int8_targets="onnxruntime")
    with pytest.raises(ConfigError, match="minimum speed-up must be > 0"):
        Int8Policy(min_speedup=0)


@pytest.mark.slow
def test_a_file_int8_gets_wrong_keeps_its_disagreeing_layers_in_float(
    cnn: tuple[nn.Module, object], calibration: np.ndarray, tmp_path: Path
) -> None:
    """A constant channel of 5000 that the next layer ignores: int8's one scale per activation
    tensor rounds the real channels away (9% top-1 agreement). The per-layer comparison finds
    the layer reading it; kept in float with the layer making it, the file agrees again."""
    model, _ = cnn
    outlier = with_outlier_channel(model)
    test = load_eval_arrays("digits", digits_card(), split="test").images
    manifest = export_module(
        outlier,
        test[:2],
        tmp_path / "bundle",
        precisions=("fp32", "int8"),
        calibration={"x": calibration},
        parity_inputs={"x": test},
        task="classification",
        class_names=CLASSES,
        int8_targets=("onnxruntime",),
        keep_slow_int8=True,
        int8_fallback_rounds=2,
        int8_timing_s=0.2,
    )
    art = manifest.artifact("onnx-int8")
    record = art.quantization
    assert record is not None and art.target == "onnxruntime"
    first, *rest = record["attempts"]
    assert first["parity"] == "failed" and first["float_layers"] == []
    assert any("top-1 agreement" in f for f in first["failures"])
    assert rest and rest[-1]["parity"] == "passed"
    convs = {
        n.name
        for n in onnx.load(str(tmp_path / "bundle" / art.path)).graph.node
        if n.op_type == "Conv"
    }
    assert convs <= set(record["float_layers"])
    assert art.parity_passed is True
    # no labels: judged by agreement with the fp32 reference
    (logits,) = art.parity["outputs"]
    assert logits["tolerance"]["description"].startswith("no labels: top-1 agreement")
    assert record["decision"] in ("kept", "kept-slow") and record["reason"]


@pytest.mark.slow
def test_an_int8_file_that_never_wins_is_left_out_with_the_reason(
    block_net: tuple[Path, Path], calibration: np.ndarray, tmp_path: Path
) -> None:
    """Asked for a 1000x speed-up no int8 file reaches: the loop keeps the costliest layers in
    float (from the profile), re-times, and finally leaves the file out, saying why; with
    --keep-slow-int8 it is kept and marked. ONNX in, from the CLI."""
    import subprocess

    np.savez(tmp_path / "calib.npz", input=calibration)
    common = [
        str(block_net[0]),
        "--precision",
        "fp32,int8",
        "--calib-data",
        str(tmp_path / "calib.npz"),
        "--int8-targets",
        "onnxruntime",
        "--int8-min-speedup",
        "1000",
    ]
    proc = subprocess.run(
        edgeport_command("export", *common, "--out", str(tmp_path / "left")),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "int8 for onnxruntime left out:" in proc.stdout and "below the 1000x" in proc.stdout
    manifest = Manifest.load(tmp_path / "left")
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32"]
    record = manifest.export["int8_left_out"]["onnxruntime"]
    assert record["decision"] == "left-out" and 2 <= len(record["attempts"]) <= 4
    assert record["attempts"][1]["float_layers"]  # the costly layers were kept in float
    assert record["timing"]["backend"] == "onnxruntime-cpu" and record["timing"]["batch"] == 1
    proc = subprocess.run(
        edgeport_command("export", *common, "--keep-slow-int8", "--out", str(tmp_path / "kept")),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    art = Manifest.load(tmp_path / "kept").artifact("onnx-int8")
    assert art.quantization is not None and art.quantization["decision"] == "kept-slow"
    assert "kept although slow" in proc.stdout
    json.dumps(art.quantization)  # plain JSON


def test_a_target_its_quantizer_cannot_serve_is_left_out_with_why(tmp_path: Path) -> None:
    """A graph with nothing to quantize (an elementwise model): no int8 file, the reason in the
    manifest, the rest of the bundle made as asked."""
    from onnx import TensorProto, helper

    from edgeport.export import export_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "relu.onnx"
    onnx.save(model, str(path))
    data = {"x": np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)}
    manifest = export_onnx(
        path, tmp_path / "bundle", precisions="fp32,int8", calibration=data,
        int8_targets="onnxruntime",
    )  # fmt: skip
    assert [a.name for a in manifest.artifacts] == ["onnx-fp32"]
    record = manifest.export["int8_left_out"]["onnxruntime"]
    assert record["decision"] == "left-out" and "inserted no QuantizeLinear" in record["reason"]
