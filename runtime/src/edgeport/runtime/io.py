"""Atomic file writing and hashing: a file a user depends on is either whole or absent."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from edgeport.runtime.errors import ModelLoadError

_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
# Opening never blocks (a FIFO would wait for a writer): the file is checked to be regular first.
_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
MAX_FILE_BYTES = 1 << 30  # what read_regular_file reads at most unless told otherwise


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle on a new temporary file beside ``path``: when the block ends without an
    error the file is fsynced and renamed to ``path``, otherwise it is removed (``path`` keeps
    what it held). For files written piece by piece (``atomic_write_bytes`` writes at once).

    The temporary file is created with mode 0666, so the umask gives it the usual permissions of
    a new file (mkstemp's would be 0600), without reading the process-wide umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, _CREATE_NEW, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_report(
    data: Callable[[], Any],
    markdown: Callable[[], str],
    *,
    json_path: str | Path | None = None,
    markdown_path: str | Path | None = None,
) -> list[Path]:
    """A result's JSON (``data()``) and Markdown (``markdown()``), whichever is asked for, each
    written atomically; returns the paths written."""
    written = []
    if json_path:
        written.append(atomic_write_json(json_path, data()))
    if markdown_path:
        written.append(atomic_write_text(markdown_path, markdown()))
    return written


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def open_regular(path: str | Path, *, what: str = "file") -> int:
    """A read-only descriptor of ``path`` after checking it is a regular file (not a directory,
    FIFO, socket or device); ``ModelLoadError`` naming ``what`` otherwise. Close it yourself."""
    path = Path(path)
    try:
        fd = os.open(path, _READ)
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{what} not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ModelLoadError(f"{what} {path} is a directory, not a file") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot open {what} {path}: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = (
            "a directory" if stat.S_ISDIR(mode) else "not a regular file (FIFO, socket or device)"
        )
        raise ModelLoadError(f"{what} {path} is {kind}; expected a regular file")
    return fd


def read_regular_file(
    path: str | Path, *, what: str = "file", max_bytes: int = MAX_FILE_BYTES
) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (checked before reading)."""
    fd = open_regular(path, what=what)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise ModelLoadError(
                f"{what} {path} has {size:,} bytes, more than the {max_bytes:,} edgeport reads "
                "for it; it is not a file of this kind, or raise the limit"
            )
        data = handle.read(size)  # the size fstat gave (read(n) allocates n bytes up front)
        if len(data) != size:
            raise ModelLoadError(f"{what} {path} changed size while being read; try again")
        return data


def cache_dir(name: str) -> Path:
    """Where edgeport keeps ``name`` (compiled models, tuning records) for this user:
    ``$EDGEPORT_CACHE_DIR/name``, else ``$XDG_CACHE_HOME/edgeport/name`` or
    ``~/.cache/edgeport/name``. Nothing is created here."""
    root = os.environ.get("EDGEPORT_CACHE_DIR")
    if root:
        return Path(root) / name
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "edgeport" / name
