"""Files an adversary can hand edgeport: each ends in a typed error naming the file, never a
traceback, a hang or unbounded memory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import rt_bundles
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.errors import EdgeportError, ModelLoadError


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def nested_if_model(depth: int) -> bytes:
    """An ONNX ModelProto whose graph holds an If whose then_branch holds an If ... ``depth``
    deep, written by hand (the protobuf library itself refuses to serialise it)."""
    graph = b""
    for _ in range(depth):
        attribute = _field(1, b"then_branch") + _field(6, graph)  # AttributeProto name, g
        node = _field(4, b"If") + _field(5, attribute)  # NodeProto op_type, attribute
        graph = _field(1, node)  # GraphProto node
    opset = _varint(2 << 3) + _varint(17)  # OperatorSetIdProto version
    return _varint(1 << 3) + _varint(8) + _field(7, graph) + _field(8, opset)


def test_deeply_nested_subgraphs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "nested.onnx"
    path.write_bytes(nested_if_model(2000))
    assert path.stat().st_size < 100_000
    with pytest.raises(ModelLoadError, match=r"subgraphs nested more than 64 deep"):
        load(path)


def test_a_deeply_nested_card_in_onnx_metadata(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    path = rt_graphs.save(
        rt_graphs.gemm_model(metadata={ONNX_METADATA_KEY: deep}), tmp_path / "m.onnx"
    )
    with pytest.raises(ModelLoadError, match=r"nested too deeply"):
        load(path)


def test_an_onnx_attribute_name_that_is_not_utf8(tmp_path: Path) -> None:
    """Found by `make fuzz`: ONNX Runtime quotes the bad bytes in its error and its Python
    binding then raises UnicodeDecodeError instead of its own error."""
    good = rt_graphs.save(rt_graphs.gemm_model(), tmp_path / "good.onnx").read_bytes()
    assert good.count(b"transB") == 1
    path = tmp_path / "bad.onnx"
    path.write_bytes(good.replace(b"transB", b"tr\xe1nsB"))
    with pytest.raises(ModelLoadError, match=r"not UTF-8 text .* bytes of a damaged file"):
        load(path, backend="onnxruntime-cpu")


@pytest.mark.parametrize("name", ["model.onnx", "model.engine"])
def test_a_fifo_given_as_a_model_is_refused_without_blocking(tmp_path: Path, name: str) -> None:
    fifo = tmp_path / name
    os.mkfifo(fifo)
    with pytest.raises(ModelLoadError, match=r"not a regular file \(FIFO"):
        load(fifo)


def test_a_fifo_or_directory_as_the_manifest(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    manifest = bundle / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    with pytest.raises(ModelLoadError, match=r"bundle manifest .* not a regular file"):
        load(bundle)
    manifest.unlink()
    manifest.mkdir()
    with pytest.raises(ModelLoadError, match=r"bundle manifest .* is a directory"):
        load(bundle)


def test_a_manifest_that_is_not_utf8(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    (bundle / "manifest.json").write_bytes(b'{"schema_version": 2, "created": "\xff\xfe"}')
    with pytest.raises(ModelLoadError, match=r"manifest is not valid JSON: Invalid UTF-8"):
        load(bundle)


def test_a_deeply_nested_manifest(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match=r"nested too deeply"):
        load(bundle)


def test_a_card_json_that_is_a_directory_or_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ModelLoadError, match=r"model card .* is a directory"):
        ModelCard.load(tmp_path / "dir.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(EdgeportError, match=r"model card .* unreadable"):
        ModelCard.load(tmp_path / "bad.json")


def _set(path: list[object], value: object) -> object:
    def edit(data: dict[str, object]) -> None:
        target: object = data
        for key in path[:-1]:
            target = target[key]  # type: ignore[index]
        target[path[-1]] = value  # type: ignore[index]

    return edit


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (_set(["artifacts"], "abc"), r"Expected `array`, got `str` - at `\$\.artifacts`"),
        (_set(["artifacts"], [None]), r"Expected `object`, got `null` - at `\$\.artifacts\[0\]`"),
        (
            _set(["artifacts"], [[1, 2]]),
            r"Expected `object`, got `array` - at `\$\.artifacts\[0\]`",
        ),
        (_set(["artifacts", 0, "parity"], [1]), r"got `array` - at `\$\.artifacts\[0\]\.parity`"),
        (_set(["versions"], ["x"]), r"Expected `object`, got `array` - at `\$\.versions`"),
        (_set(["card", "mean"], ["a"]), r"Expected `float`, got `str` - at `\$\.card\.mean\[0\]`"),
        (_set(["artifacts", 0, "path"], "model\x00.onnx"), r"without NUL bytes"),
        (
            _set(["artifacts", 0, "inputs", 0, "ranges", 0], [1.5, 4, 16]),
            r"Expected `int`, got `float` - at `\$\.artifacts\[0\]\.inputs\[0\]\.ranges\[0\]\[0\]`",
        ),
        (
            _set(["artifacts", 0, "inputs", 0, "ranges", 0], [1_000_000, 1_000_000, 1_000_000]),
            r"minimum dimension of 1000000, above the 1024",
        ),
        (
            _set(["artifacts", 0, "inputs", 0, "ranges", 0], [1, 4, 10**12]),
            r"range of dimension 0 needs 0 <= min <= opt <= max <= 2147483647",
        ),
        (
            _set(["artifacts", 0, "parity", "passed"], "false"),
            r"parity\.passed must be true, false or null, got 'false'",
        ),
        (_set(["schema_version"], -1), r"schema_version -1 is not one this edgeport reads"),
        (_set(["schema_version"], True), r"schema_version True is not one this edgeport reads"),
        (_set(["card", "input_size"], [100000, 100000]), r"input_size must be .* 1\.\.8192"),
        (_set(["card", "colour"], "red"), r"unknown fields: \$\.card\.colour"),
        (_set(["reference"], {"sha256": ["x"]}), r"got `array` - at `\$\.sha256`"),
    ],
)
def test_manifest_fields_of_the_wrong_type_or_range(
    gemm_bundle_dir: Path, tmp_path: Path, edit: object, pattern: str
) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    rt_bundles.rewrite_manifest(bundle, edit)
    with pytest.raises(ModelLoadError, match=pattern):
        load(bundle)


def test_duplicate_artifact_names(gemm_bundle_dir: Path, tmp_path: Path) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")

    def duplicate(data: dict[str, list[dict[str, object]]]) -> None:
        data["artifacts"][1]["name"] = data["artifacts"][0]["name"]

    rt_bundles.rewrite_manifest(bundle, duplicate)
    with pytest.raises(ModelLoadError, match=r"lists artifacts \['onnx-fp32'\] more than once"):
        load(bundle)


def _scale_model(factor: float) -> object:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    scale = numpy_helper.from_array(np.array(factor, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])], "g", [x], [y], [scale]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def test_non_finite_outputs_from_finite_inputs_warn(tmp_path: Path) -> None:
    import warnings

    import numpy as np

    from edgeport.runtime.errors import NonFiniteOutputWarning

    path = rt_graphs.save(_scale_model(1e30), tmp_path / "overflow.onnx")  # type: ignore[arg-type]
    x = np.array([[3e38, 1.0], [1.0, 1.0]], np.float32)  # finite, near float32's max
    with load(path, threads=1) as model:
        with pytest.warns(NonFiniteOutputWarning, match=r"y: 0 NaN, 1 Inf of 4"):
            out = model.infer({"x": x})["y"]
        assert np.isinf(out[0, 0])
        with pytest.warns(NonFiniteOutputWarning):
            model.run(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.run(np.ones((2, 2), np.float32))  # finite outputs: no warning
    with load(path, threads=1, check_outputs=False) as quiet, warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet.run(x)


def _inspect(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    from edgeport.runtime.cli import main

    code = main(["inspect", *(str(a) for a in argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_exits_1_naming_a_tampered_or_truncated_artifact(
    gemm_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    assert _inspect(capsys, bundle)[0] == 0
    path = bundle / "model.fp32.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    (bundle / "model.int8.onnx").write_bytes(b"")
    code, out, err = _inspect(capsys, bundle)
    assert code == 1
    assert "error: bad artifacts: onnx-fp32, onnx-int8" in err
    assert "onnx-fp32: onnx fp32" in out and "BAD: artifact 'onnx-fp32'" in out
    assert "load() refuses it: onnx-fp32 is BAD" in out
    with pytest.raises(ModelLoadError, match=r"artifact 'onnx-fp32' .* has sha256"):
        load(bundle)  # auto never runs it


def test_inspect_no_verify_never_reads_outside_the_bundle(
    gemm_bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = shutil.copytree(gemm_bundle_dir, tmp_path / "b")
    outside = tmp_path / "secret.onnx"
    shutil.copy(bundle / "model.fp32.onnx", outside)
    (bundle / "model.fp32.onnx").unlink()
    (bundle / "model.fp32.onnx").symlink_to(outside)
    code, out, err = _inspect(capsys, bundle, "--no-verify")
    assert code == 1 and "onnx-fp32" in err
    assert "outside the bundle" in out and "opsets" not in out
    with pytest.raises(ModelLoadError, match="outside the bundle"):
        load(bundle, verify=False)
