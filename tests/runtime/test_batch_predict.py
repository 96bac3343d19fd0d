"""``edgeport predict ... --out FILE.parquet``: batch inference on a real local Ray cluster.

Every pipeline here runs real Ray actors that load real ONNX Runtime sessions; the rows are
compared with ``Model.predict`` / ``Model.infer`` on the same inputs in this process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rt_graphs

from edgeport.runtime import load
from edgeport.runtime.card import ModelCard
from edgeport.runtime.cli import main
from edgeport.runtime.errors import ConfigError, InputError
from edgeport.runtime.preprocess import preprocess

ray = pytest.importorskip("ray", reason="needs the [batch] extra (ray[data])")
# Ray Data binds its log handlers to the sys.stderr of its import: import it now, not under a
# test's capsys (whose stream is closed after that test)
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local two-CPU Ray cluster for this module, shut down after it (so that the serve tests
    start their own cluster with the CPUs they ask for)."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Nested folders of PNGs (grey, RGB, RGBA; odd sizes), one corrupt PNG and a text file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(1)
    layout = [
        ("a.png", "L", (9, 7)),
        ("b.png", "RGB", (40, 30, 3)),
        ("deep/c.png", "RGBA", (5, 6, 4)),
        ("deep/deeper/d.png", "RGB", (32, 32, 3)),
        ("e.png", "RGB", (17, 50, 3)),
    ]
    for name, mode, shape in layout:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(root / name)
    (root / "deep" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but not an image")
    (root / "notes.txt").write_text("not an image, not listed")
    return root


def predict_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main(["predict", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_image_folder_rows_equal_model_predict(
    ray_cluster: None,
    cnn_onnx: Path,
    image_tree: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "predictions.parquet"
    code, stdout, err = predict_cli(
        capsys, cnn_onnx, image_tree, "--out", out, "--workers", 2, "--batch", 2,
        "--threads", 1, "--top-k", 3,
    )  # fmt: skip
    assert code == 0, err
    assert "6 rows (1 errors) written" in stdout and "2 workers x 1 threads, batch 2" in stdout
    rows = pq.read_table(out).to_pylist()
    expected_paths = sorted(p for p in image_tree.rglob("*.png"))
    assert [r["path"] for r in rows] == [str(p) for p in expected_paths]  # input order kept

    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert "cannot read image" in broken["error"] and "broken.png" in broken["error"]
    assert broken["labels"] is None and broken["scores"] is None

    good = [r for r in rows if r["error"] is None]
    with load(cnn_onnx, threads=1) as model:
        want = model.predict([r["path"] for r in good], top_k=3)
    for row, pred in zip(good, want, strict=True):
        assert row["labels"] == pred.labels and row["indices"] == pred.indices
        assert row["scores"] == pytest.approx(pred.probabilities, rel=1e-6, abs=1e-7)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer left nothing behind


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_tensor_inputs_give_raw_outputs_equal_to_infer(
    ray_cluster: None, tmp_path: Path, suffix: str
) -> None:
    """A non-image model (int64 ids + bool mask in; float32, int64 and bool outputs)."""
    model_path = rt_graphs.save(rt_graphs.token_model(), tmp_path / "tokens.onnx")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, rt_graphs.VOCAB, (7, 5)).astype(np.int64)
    mask = rng.integers(0, 2, (7, 5)).astype(bool)
    source = tmp_path / f"inputs{suffix}"
    if suffix == ".npz":
        np.savez(source, ids=ids, mask=mask)
    else:
        pq.write_table(
            pa.table({"mask": mask.tolist(), "ids": ids.tolist(), "id": list("abcdefg")}), source
        )
    out = tmp_path / "outputs.parquet"
    assert main(["predict", str(model_path), str(source), "--out", str(out), "--batch", "3"]) == 0

    table = pq.read_table(out)
    assert table.column_names == ["row", "hidden", "count", "kept"]
    assert table.column("row").to_pylist() == list(range(7))
    with load(model_path) as model:
        want = model.infer({"ids": ids, "mask": mask})
    for name, array in want.items():
        got = np.asarray(table.column(name).to_pylist(), dtype=array.dtype)
        np.testing.assert_array_equal(got, array)


def test_image_model_without_classes_gives_raw_outputs(
    ray_cluster: None, image_tree: Path, tmp_path: Path
) -> None:
    card = ModelCard(
        architecture="detector", task="other", in_channels=3, input_size=(4, 4),
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )  # fmt: skip
    model_path = rt_graphs.save(rt_graphs.detector_model(), tmp_path / "det.onnx")
    import onnx
    from onnx import helper

    proto = onnx.load(str(model_path))
    helper.set_model_props(proto, {"edgeport.card": card.to_json()})
    onnx.save(proto, str(model_path))
    out = tmp_path / "det.parquet"
    assert main(["predict", str(model_path), str(image_tree / "deep"), "--out", str(out)]) == 0

    rows = pq.read_table(out).to_pylist()
    assert [Path(r["path"]).name for r in rows] == ["broken.png", "c.png", "d.png"]
    assert rows[0]["boxes"] is None and "cannot read image" in rows[0]["error"]
    with load(model_path) as model:
        want = model.infer(preprocess([rows[1]["path"], rows[2]["path"]], card))
    for name, array in want.items():
        got = np.asarray([rows[1][name], rows[2][name]], dtype=array.dtype)
        np.testing.assert_array_equal(got, array)


def test_a_missing_input_column_is_a_clear_error_and_writes_nothing(
    ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_path = rt_graphs.save(rt_graphs.token_model(), tmp_path / "tokens.onnx")
    source = tmp_path / "wrong.npz"
    np.savez(source, ids=np.zeros((2, 3), np.int64), other=np.zeros((2, 3), bool))
    out = tmp_path / "out.parquet"
    code, _, err = predict_cli(capsys, model_path, source, "--out", out)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: the inputs have columns ['ids', 'other']; the model's inputs are ['ids', 'mask'] "
        "(missing ['mask'])"
    )
    assert "RayTaskError" not in err and "Failed to apply UDF" not in err  # no Ray trace or advice
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_settings_refused_before_any_work(
    ray_cluster: None, cnn_onnx: Path, image_tree: Path, tmp_path: Path
) -> None:
    from edgeport.runtime.batch import BatchConfig, predict_batch

    out = tmp_path / "p.parquet"
    with pytest.raises(ConfigError, match=r"output must be a \.parquet file"):
        BatchConfig(model=cnn_onnx, inputs=(image_tree,), out=tmp_path / "p.csv")
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        BatchConfig(model=cnn_onnx, inputs=(image_tree,), out=out, workers=0)
    with pytest.raises(ConfigError, match=r"2 workers x 2 threads need 4 CPUs; .* has 2"):
        predict_batch(BatchConfig(cnn_onnx, (image_tree,), out, workers=2, threads=2))
    bare = rt_graphs.save(rt_graphs.token_model(), tmp_path / "bare.onnx")
    with pytest.raises(ConfigError, match="images need a model card"):
        predict_batch(BatchConfig(bare, (image_tree,), out))
    with pytest.raises(ConfigError, match=r"one \.npz/\.parquet file"):
        predict_batch(BatchConfig(bare, (image_tree, tmp_path / "x.npz"), out))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no image files"):
        predict_batch(BatchConfig(cnn_onnx, (empty,), out))
    np.savez(tmp_path / "ragged.npz", ids=np.zeros((2, 3), np.int64), mask=np.zeros((3, 3), bool))
    with pytest.raises(InputError, match="same number of samples"):
        predict_batch(BatchConfig(bare, (tmp_path / "ragged.npz",), out))
    assert not out.exists()


def test_without_out_predict_is_unchanged_and_refuses_batch_flags(
    cnn_onnx: Path, image_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = predict_cli(capsys, cnn_onnx, image_tree / "a.png", "--json")
    assert code == 0 and json.loads(out)["predictions"][0]["image"].endswith("a.png")
    code, _, err = predict_cli(capsys, cnn_onnx, image_tree / "a.png", "--workers", 2)
    assert code == 1 and "--workers only apply with --out FILE.parquet" in err
