"""CIFAR-10 from a tiny archive in the real python format, and class-per-folder images."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import DatasetError
from edgeport.train import cifar
from edgeport.train.data import load_eval_arrays, load_split
from edgeport.train.loop import TrainConfig, train

PER_BATCH = 20  # images per batch in the tiny archive (the real one has 10000)


def _batch(seed: int, count: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(v) for v in np.arange(count) % 10],
        b"data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
        b"filenames": [f"img_{seed}_{i}.png".encode() for i in range(count)],
    }


def write_tiny_cifar(root: Path, *, as_archive: bool) -> dict[str, dict[bytes, object]]:
    """The real layout (cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta), pickled
    at protocol 2 with bytes keys as the official Python 2 files are, optionally as .tar.gz."""
    batches: dict[str, dict[bytes, object]] = {
        name: _batch(i, PER_BATCH) for i, name in enumerate(cifar.TRAIN_BATCHES, start=1)
    }
    batches[cifar.TEST_BATCH] = _batch(99, PER_BATCH)
    meta = {b"label_names": [n.encode() for n in cifar.CLASS_NAMES], b"num_vis": 3072}
    files = {name: pickle.dumps(b, protocol=2) for name, b in batches.items()}
    files[cifar.META_FILE] = pickle.dumps(meta, protocol=2)
    root.mkdir(parents=True, exist_ok=True)
    if as_archive:
        with tarfile.open(root / cifar.ARCHIVE_NAME, "w:gz") as tar:
            for name, payload in files.items():
                info = tarfile.TarInfo(f"{cifar.BATCH_DIR}/{name}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    else:
        (root / cifar.BATCH_DIR).mkdir()
        for name, payload in files.items():
            (root / cifar.BATCH_DIR / name).write_bytes(payload)
    return batches


def cifar_card(size: tuple[int, int] = (32, 32)) -> ModelCard:
    return ModelCard("simple_cnn", 10, cifar.CLASS_NAMES, 3, size, (0.5,) * 3, (0.5,) * 3)


def test_cifar_from_the_archive(tmp_path: Path) -> None:
    batches = write_tiny_cifar(tmp_path, as_archive=True)
    test = load_split("cifar10", "test", data_root=tmp_path)
    assert (tmp_path / cifar.BATCH_DIR / cifar.TEST_BATCH).is_file()  # extracted
    assert test.class_names == cifar.CLASS_NAMES and len(test) == PER_BATCH
    data = batches[cifar.TEST_BATCH][b"data"]
    # Row layout: 1024 red, then 1024 green, then 1024 blue, each row-major 32x32.
    np.testing.assert_array_equal(test.arrays[3, :, :, 0].ravel(), data[3, :1024])
    np.testing.assert_array_equal(test.arrays[3, 0, :, 2], data[3, 2048 : 2048 + 32])
    train_split = load_split("cifar10", "train", data_root=tmp_path)
    val_split = load_split("cifar10", "val", data_root=tmp_path)
    assert len(train_split) + len(val_split) == 5 * PER_BATCH and len(val_split) == 10
    arrays = load_eval_arrays("cifar10", cifar_card(), data_root=tmp_path, limit=7)
    assert arrays.images.shape == (7, 3, 32, 32) and arrays.labels.tolist() == list(range(7))


def test_cifar_trains_from_extracted_batches(tmp_path: Path) -> None:
    write_tiny_cifar(tmp_path / "data", as_archive=False)
    run = train(
        TrainConfig(
            model="simple_cnn", data="cifar10", data_root=tmp_path / "data", epochs=1,
            batch_size=16, out=tmp_path / "run", progress=False,
        )
    )  # fmt: skip
    card = ModelCard.load(run / "card.json")
    assert card.class_names == cifar.CLASS_NAMES and card.input_shape == (3, 32, 32)


def test_missing_cifar_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as info:
        load_split("cifar10", "test", data_root=tmp_path)
    message = str(info.value)
    assert f"CIFAR-10 not found under {tmp_path}" in message
    assert str(tmp_path / "cifar-10-batches-py") in message and "--download" in message
    assert cifar.ARCHIVE_URL in message


class _Exploit:
    """Unpickling this would run os.system; the reader must refuse before calling it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_cifar_reader_refuses_foreign_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    root = tmp_path / cifar.BATCH_DIR
    root.mkdir()
    (root / cifar.TEST_BATCH).write_bytes(
        pickle.dumps({b"data": _Exploit(marker), b"labels": []}, protocol=2)
    )
    with pytest.raises(DatasetError, match=r"refusing to load (posix|os)\.system"):
        load_split("cifar10", "test", data_root=tmp_path)
    assert not marker.exists()
    (root / cifar.TEST_BATCH).write_bytes(b"\x80\x02}q\x00(X\x04\x00\x00\x00data")  # truncated
    with pytest.raises(DatasetError, match="is not a CIFAR-10 python batch"):
        load_split("cifar10", "test", data_root=tmp_path)
    objects = np.array([1, "x"], dtype=object)
    (root / cifar.TEST_BATCH).write_bytes(pickle.dumps({b"data": objects}, protocol=2))
    with pytest.raises(DatasetError, match="refusing"):
        load_split("cifar10", "test", data_root=tmp_path)


def test_cifar_reader_checks_the_layout(tmp_path: Path) -> None:
    root = tmp_path / cifar.BATCH_DIR
    root.mkdir()
    bad = {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}
    (root / cifar.TEST_BATCH).write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DatasetError, match="rows must hold 3072 pixels, got 100"):
        load_split("cifar10", "test", data_root=tmp_path)


# --------------------------------------------------------------------------------------------
# imagefolder


def write_image_folder(root: Path, per_class: int = 10) -> None:
    """Two classes a model can tell apart: bright squares vs dark squares, PNG and JPEG."""
    rng = np.random.default_rng(0)
    for cls, level in (("bright", 220), ("dark", 30)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 10, size=(20 + i, 24, 3)), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(root / cls / f"{i}{suffix}")
    (root / "bright" / "notes.txt").write_text("not an image")


def test_imagefolder_splits_and_preprocessing(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    splits = {s: load_split("imagefolder", s, data_root=tmp_path) for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 14, "val": 2, "test": 4}
    assert splits["test"].class_names == ("bright", "dark")
    card = ModelCard("simple_cnn", 2, ("bright", "dark"), 3, (16, 16), (0.5,) * 3, (0.5,) * 3)
    arrays = load_eval_arrays("imagefolder", card, data_root=tmp_path)
    assert arrays.images.shape == (4, 3, 16, 16)
    assert arrays.labels.tolist() == [0, 0, 1, 1]
    assert arrays.images[0].mean() > 0.5 and arrays.images[3].mean() < -0.5


def test_imagefolder_with_train_test_folders_trains(tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_image_folder(tmp_path / "data" / split, per_class=6)
    assert len(load_split("imagefolder", "test", data_root=tmp_path / "data")) == 12
    run = train(
        TrainConfig(
            model="simple_cnn", data="imagefolder", data_root=tmp_path / "data", epochs=3,
            input_size=(16, 16), out=tmp_path / "run", progress=False, batch_size=4,
        )
    )  # fmt: skip
    import json

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split_sizes"] == {"train": 10, "val": 2, "test": 12}
    assert metrics["test_accuracy"] == 1.0  # bright vs dark is easy


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=f"image folder not found: {tmp_path / 'absent'}"):
        load_split("imagefolder", "train", data_root=tmp_path / "absent")
    (tmp_path / "only").mkdir()
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / "a.png")
    with pytest.raises(DatasetError, match=r"of which \['empty'\] hold no images"):
        load_split("imagefolder", "train", data_root=tmp_path)
    (tmp_path / "empty" / "broken.png").write_bytes(b"not a png")
    split = load_split("imagefolder", "train", data_root=tmp_path)
    broken = split.files.index(tmp_path / "empty" / "broken.png")
    with pytest.raises(DatasetError, match=r"cannot read .*broken\.png"):
        split.image(broken)


def test_cifar_reader_bounds_what_a_damaged_batch_allocates(tmp_path: Path) -> None:
    """Found by `make fuzz`: an array constructor asked for 2**31 elements, and a flipped bit
    made a BINBYTES8 length that the C unpickler allocated before reading (1.9 GB from a 4 KB
    file); a length of 2**63 escaped as OverflowError."""
    root = tmp_path / cifar.BATCH_DIR
    root.mkdir()
    good = pickle.dumps(_batch(0, 2), protocol=2)
    assert good.count(b"K\x00\x85") == 1  # _reconstruct(ndarray, (0,), b'b')
    huge_shape = good.replace(b"K\x00\x85", b"J\xff\xff\xff\x7f\x85")
    (root / cifar.TEST_BATCH).write_bytes(huge_shape)
    with pytest.raises(DatasetError, match=r"unexpected array constructor arguments"):
        load_split("cifar10", "test", data_root=tmp_path)
    (root / cifar.TEST_BATCH).write_bytes(b"\x80\x04\x8e" + (2**63).to_bytes(8, "little"))
    with pytest.raises(DatasetError, match="is not a CIFAR-10 python batch"):
        load_split("cifar10", "test", data_root=tmp_path)
    (root / cifar.TEST_BATCH).write_bytes(b"\x80\x04\x8e" + (2**30).to_bytes(8, "little") + b"x")
    with pytest.raises(DatasetError, match=r"expected 1073741824 bytes in a bytes8"):
        load_split("cifar10", "test", data_root=tmp_path)  # refused before 1 GiB is allocated
    with (root / cifar.TEST_BATCH).open("wb") as sparse:
        sparse.truncate(cifar.MAX_BATCH_BYTES + 1)
    with pytest.raises(DatasetError, match="a CIFAR-10 batch is about 31 MB"):
        load_split("cifar10", "test", data_root=tmp_path)
