"""Read CIFAR-10's python-format batches without running arbitrary pickles.

The official archive (``cifar-10-python.tar.gz``) stores each batch as a Python 2 pickle of a
dict ``{b"data": uint8 array (N, 3072), b"labels": [int], ...}``. ``pickle.load`` on such a file
would run whatever the file asks for, and torchvision's ``CIFAR10`` class does just that (and
refuses any file whose md5 differs from the official one). Here a restricted unpickler, as the
``pickle`` documentation's "Restricting Globals" recipe describes, resolves only the three
callables that rebuild a numpy array (``_reconstruct``, ``ndarray``, ``dtype``) and a
latin-1-only ``codecs.encode`` (how Python 3 pickles bytes at protocol 2). Any other global,
e.g. ``os.system``, raises ``DatasetError`` before it is called; object arrays are refused.
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import pickletools
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.errors import DatasetError

ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
MAX_BATCH_BYTES = 64 << 20  # a real batch is 31 MB
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class _PickledArray:
    """What numpy's pickle of an array builds, checked before anything is allocated: numpy
    writes ``_reconstruct(ndarray, (0,), b'b')`` and then sets the state ``(1, shape, dtype,
    is_fortran, raw bytes)``. Only numeric dtypes and raw bytes of exactly the shape's size are
    taken, so the array never claims more memory than the file holds."""

    array: np.ndarray

    def __setstate__(self, state: Any) -> None:
        try:
            _, shape, dtype, fortran, raw = state
        except (TypeError, ValueError):
            raise DatasetError(f"unexpected array state {type(state).__name__}") from None
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
            raise DatasetError(f"refusing an array of dtype {dtype}: CIFAR arrays are numeric")
        if not isinstance(raw, bytes) or not isinstance(shape, tuple):
            raise DatasetError("an array's state holds no raw bytes and shape")
        if not all(isinstance(d, int) and d >= 0 for d in shape):
            raise DatasetError(f"unexpected array shape {shape!r}")
        if math.prod(shape) * dtype.itemsize != len(raw):
            raise DatasetError(
                f"an array of shape {shape} and dtype {dtype} needs "
                f"{math.prod(shape) * dtype.itemsize:,} bytes; the file holds {len(raw):,}"
            )
        flat = np.frombuffer(raw, dtype=dtype)
        self.array = flat.reshape(shape, order="F" if fortran else "C").copy()


def _empty_array(cls: Any, shape: Any, dtype: Any) -> _PickledArray:
    if cls is not np.ndarray or shape != (0,):
        raise DatasetError(f"unexpected array constructor arguments ({shape!r})")
    return _PickledArray()


def _arrays(value: Any) -> Any:
    """``value`` with every unpickled array in place of its :class:`_PickledArray`."""
    if isinstance(value, _PickledArray):
        if not hasattr(value, "array"):
            raise DatasetError("an array was never given its data")
        return value.array
    if isinstance(value, dict):
        return {k: _arrays(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_arrays(v) for v in value]
    return value


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise DatasetError(f"unexpected codec {encoding!r} in a CIFAR batch")
    return codecs.encode(text, "latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the numpy array constructors; everything else is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DatasetError(
                f"refusing to load {module}.{name}: a CIFAR batch holds only numpy arrays, "
                "lists and strings"
            ) from None


def read_batch(path: Path) -> dict[str, Any]:
    """One python-format batch as a dict with str keys; never executes code from the file."""
    try:
        size = path.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise DatasetError(
                f"{path} is {size:,} bytes; a CIFAR-10 batch is about 31 MB (limit "
                f"{MAX_BATCH_BYTES:,})"
            )
        payload = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"CIFAR-10 batch file not found: {path}") from exc
    try:
        # every length in the stream checked against what remains before the C unpickler
        # allocates it (one flipped bit made a 1.9 GB bytes length in a 4 KB file)
        for _ in pickletools.genops(payload):
            pass
        data = _arrays(_ArrayOnlyUnpickler(io.BytesIO(payload), encoding="bytes").load())
    except DatasetError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    except Exception as exc:  # any failure of the restricted unpickler means a damaged file
        raise DatasetError(
            f"{path} is not a CIFAR-10 python batch (truncated or corrupt?): {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path} should hold a dict, got {type(data).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in data.items()}


def read_images(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch's images as uint8 NHWC (N, 32, 32, 3) and its labels as int64."""
    batch = read_batch(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DatasetError(f"{path}: 'data' must be a uint8 array (N, 3072), got {_describe(data)}")
    if data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' rows must hold 3072 pixels, got {data.shape[1]}")
    if not isinstance(labels, list | np.ndarray) or len(labels) != data.shape[0]:
        raise DatasetError(f"{path}: expected {data.shape[0]} labels, got {_describe(labels)}")
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.size and (label_array.min() < 0 or label_array.max() >= len(CLASS_NAMES)):
        raise DatasetError(
            f"{path}: labels must be in 0..9, got {label_array.min()}..{label_array.max()}"
        )
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), label_array


def read_class_names(batch_dir: Path) -> tuple[str, ...]:
    meta_path = batch_dir / META_FILE
    if not meta_path.is_file():
        return CLASS_NAMES
    names = read_batch(meta_path).get("label_names")
    if not isinstance(names, list) or len(names) != len(CLASS_NAMES):
        raise DatasetError(f"{meta_path}: 'label_names' must list 10 names, got {_describe(names)}")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {value.shape}"
    return type(value).__name__


def find_batch_dir(root: Path, *, download: bool) -> Path:
    """The directory holding the batches under ``root``; extracts or downloads the archive when
    present or asked, else raises ``DatasetError`` saying where to put it."""
    for candidate in (root / BATCH_DIR, root):
        if (candidate / TEST_BATCH).is_file():
            return candidate
    archive = root / ARCHIVE_NAME
    if not archive.is_file() and download:
        from torchvision.datasets.utils import download_url

        download_url(ARCHIVE_URL, str(root), ARCHIVE_NAME, ARCHIVE_MD5)  # checks the md5
    if archive.is_file():
        extract_archive(archive, root)
        if (root / BATCH_DIR / TEST_BATCH).is_file():
            return root / BATCH_DIR
        raise DatasetError(f"{archive} did not contain {BATCH_DIR}/{TEST_BATCH}")
    raise DatasetError(
        f"CIFAR-10 not found under {root}: expected {root / BATCH_DIR}/ (data_batch_1..5, "
        f"test_batch, batches.meta) or {archive} (from {ARCHIVE_URL}). Download it there, or "
        "pass --download to let edgeport fetch it (163 MB), or point --data-root elsewhere"
    )


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a .tar.gz, refusing absolute paths, '..', links and devices (the data filter)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python < 3.10.12: check the members ourselves
                members = tar.getmembers()
                for member in members:
                    name = Path(member.name)
                    if (
                        name.is_absolute()
                        or ".." in name.parts
                        or not (member.isfile() or member.isdir())
                    ):
                        raise DatasetError(f"{archive}: refusing unsafe member {member.name!r}")
                tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(f"cannot extract {archive} (truncated or corrupt?): {exc}") from exc
