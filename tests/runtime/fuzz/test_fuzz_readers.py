"""Property-based fuzzing of every reader that faces untrusted files (see harness.py for the
property). Cases are mutations of real, valid inputs (a manifest, a card, ONNX files, a
safetensors file, a CIFAR batch, a TensorRT-RTX plan, images of every Pillow mode) and freshly
generated ones. ``make test`` runs a bounded, derandomized set; ``make fuzz`` runs thousands."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rt_engines
import rt_graphs
from harness import guarded
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from edgeport.runtime import load
from edgeport.runtime.backends.onnx_proto import read_onnx_summary
from edgeport.runtime.bundle import Manifest
from edgeport.runtime.card import ModelCard
from edgeport.runtime.preprocess import prepare_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow's corrupt-TIFF notes

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _paths(value, (*prefix, index))
    return out


def mutate(data: st.DataObject, doc: Any) -> Any:
    """1 to 6 random edits of a JSON document: replace a value, delete it, add an unknown key."""
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, 6))):
        path = data.draw(st.sampled_from(_paths(doc)))
        if not path:
            doc = data.draw(JSON_VALUES) if data.draw(st.booleans()) else doc
            continue
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(("replace", "delete", "add")))
        if action == "replace":
            parent[path[-1]] = data.draw(JSON_VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(JSON_VALUES)
        else:
            parent.append(data.draw(JSON_VALUES))
    return doc


def damage(data: st.DataObject, blob: bytes) -> bytes:
    """Truncate, flip bits in and/or splice random bytes into ``blob``."""
    out = bytearray(blob)
    if data.draw(st.booleans()):
        out = out[: data.draw(st.integers(0, len(out)))]
    for _ in range(data.draw(st.integers(0, 16))):
        if out:
            out[data.draw(st.integers(0, len(out) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    if data.draw(st.booleans()):
        at = data.draw(st.integers(0, len(out)))
        out[at:at] = data.draw(st.binary(max_size=64))
    return bytes(out)


# -- sources: real, valid inputs -------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest_doc(gemm_bundle_dir: Path) -> dict[str, Any]:
    return json.loads((gemm_bundle_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def onnx_blobs(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    root = tmp_path_factory.mktemp("fuzz-onnx")
    return [
        rt_graphs.save(model, root / f"{i}.onnx").read_bytes()
        for i, model in enumerate(
            (rt_graphs.gemm_model(), rt_graphs.conv_model(), rt_graphs.gemm_model(precision="int8"))
        )
    ]


@pytest.fixture(scope="module")
def safetensors_blob() -> bytes:
    from safetensors.numpy import save

    return save({"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(3, np.int64)})


@pytest.fixture(scope="module")
def cifar_blob() -> bytes:
    rng = np.random.default_rng(0)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, 4)],
        b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
        b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"],
    }
    return pickle.dumps(batch, protocol=2)


# -- the readers -------------------------------------------------------------------------------


@given(data=st.data())
def test_fuzz_manifest_documents(
    data: st.DataObject, manifest_doc: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    doc = mutate(data, manifest_doc)
    guarded(Manifest.from_dict, "manifest (parsed)")(doc)
    root = tmp_path_factory.mktemp("m")
    (root / "manifest.json").write_text(json.dumps(doc))
    guarded(Manifest.load, "manifest (file)")(root)


@given(data=st.data())
def test_fuzz_manifest_bytes(
    data: st.DataObject, manifest_doc: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("mb")
    (root / "manifest.json").write_bytes(damage(data, json.dumps(manifest_doc).encode()))
    guarded(Manifest.load, "manifest (bytes)")(root)


@given(data=st.data())
def test_fuzz_model_cards(data: st.DataObject, manifest_doc: dict[str, Any]) -> None:
    doc = mutate(data, manifest_doc["card"])
    guarded(ModelCard.from_dict, "card (parsed)")(doc)
    generated = data.draw(
        st.dictionaries(st.sampled_from(sorted(manifest_doc["card"])), JSON_VALUES)
    )
    guarded(ModelCard.from_dict, "card (generated)")(generated)
    text = damage(data, json.dumps(manifest_doc["card"]).encode()).decode("utf-8", "replace")
    guarded(ModelCard.from_json, "card (text)")(text)


@given(data=st.data())
def test_fuzz_onnx_files(
    data: st.DataObject, onnx_blobs: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> None:
    blob = damage(data, data.draw(st.sampled_from(onnx_blobs)))
    path = tmp_path_factory.mktemp("o") / "model.onnx"
    path.write_bytes(blob)
    guarded(read_onnx_summary, "onnx (summary)")(path)
    model = guarded(load, "onnx (load)")(path, threads=1)
    if not isinstance(model, Exception):
        model.close()


@given(data=st.data())
def test_fuzz_safetensors(
    data: st.DataObject, safetensors_blob: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from edgeport.train.checkpoint import read_safetensors

    path = tmp_path_factory.mktemp("s") / "weights.safetensors"
    path.write_bytes(damage(data, safetensors_blob))
    guarded(read_safetensors, "safetensors")(path)


@given(data=st.data())
def test_fuzz_cifar_batches(
    data: st.DataObject, cifar_blob: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from edgeport.train.cifar import read_images

    path = tmp_path_factory.mktemp("c") / "data_batch_1"
    path.write_bytes(damage(data, cifar_blob))
    guarded(read_images, "cifar batch")(path)


MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F", "HSV", "LAB")
FORMATS = {
    "PNG": ".png",
    "TIFF": ".tiff",
    "BMP": ".bmp",
    "GIF": ".gif",
    "JPEG": ".jpg",
    "WEBP": ".webp",
}


@given(data=st.data())
def test_fuzz_images_of_every_mode(
    data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    mode = data.draw(st.sampled_from(MODES))
    size = (data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48)))
    seed = data.draw(st.integers(0, 2**32 - 1))
    image = Image.frombytes(mode, size, np.random.default_rng(seed).bytes(_nbytes(mode, size)))
    guarded(_prepare, "image (PIL)")(image)
    fmt = data.draw(st.sampled_from(sorted(FORMATS)))
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # this format cannot hold this mode: nothing to read back
    path = tmp_path_factory.mktemp("i") / f"image{FORMATS[fmt]}"
    path.write_bytes(
        damage(data, buffer.getvalue()) if data.draw(st.booleans()) else buffer.getvalue()
    )
    guarded(_prepare, "image (file)")(path)


def _nbytes(mode: str, size: tuple[int, int]) -> int:
    bits = {
        "1": 1,
        "L": 8,
        "P": 8,
        "LA": 16,
        "I;16": 16,
        "RGB": 24,
        "YCbCr": 24,
        "HSV": 24,
        "LAB": 24,
    }
    per_pixel = bits.get(mode, 32)
    width, height = size
    if mode == "1":
        return (width + 7) // 8 * height
    return width * height * per_pixel // 8


_GREY = ModelCard(
    architecture="x",
    num_classes=1,
    class_names=("a",),
    in_channels=1,
    input_size=(7, 9),
    mean=(0.5,),
    std=(0.5,),
)
_RGB = ModelCard(
    architecture="x",
    num_classes=1,
    class_names=("a",),
    in_channels=3,
    input_size=(7, 9),
    mean=(0.5,) * 3,
    std=(0.5,) * 3,
)


def _prepare(source: Any) -> None:
    for card in (_GREY, _RGB):
        out = prepare_image(source, card)
        assert out.shape == (7, 9, card.in_channels) and out.dtype == np.uint8


@given(data=st.data())
def test_fuzz_tensorrt_plans(data: st.DataObject, tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX reads plan headers")
    from edgeport.runtime.backends.tensorrt import check_plan

    blob = _plan(tmp_path_factory)
    path = tmp_path_factory.mktemp("p") / "model.engine"
    path.write_bytes(damage(data, blob))
    guarded(check_plan, "tensorrt plan")(path)


_PLAN: dict[str, bytes] = {}


def _plan(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if "plan" not in _PLAN:
        root = tmp_path_factory.mktemp("plan")
        rt_engines.build_engine(
            rt_graphs.save(rt_graphs.gemm_model(), root / "m.onnx"), root / "m.engine"
        )
        _PLAN["plan"] = (root / "m.engine").read_bytes()
    return _PLAN["plan"]
