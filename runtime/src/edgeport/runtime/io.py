"""Atomic file writing and hashing: a file a user depends on is either whole or absent.

A fault of the machine at a write or read (no space left, permission denied, a read-only file
system, a busy mount point, a file that vanished) is raised as a :class:`StorageError` that names
the path and what to do (:func:`storage_error`), never as a bare ``OSError``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from edgeport.runtime.errors import ModelLoadError, StorageError

_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
# Opening never blocks (a FIFO would wait for a writer): the file is checked to be regular first.
_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
MAX_FILE_BYTES = 1 << 30  # what read_regular_file reads at most unless told otherwise


_WRITE_ADVICE = "free space there or choose another place"
_CAUSES: dict[int, tuple[str, str]] = {  # errno: (what happened, what to do)
    errno.ENOSPC: ("no space left on the device", _WRITE_ADVICE),
    errno.EDQUOT: ("the disk quota is exceeded", _WRITE_ADVICE),
    errno.EFBIG: ("the file is larger than the file system allows", "choose another place"),
    errno.EACCES: ("permission denied", "choose a place you may use, or change its permissions"),
    errno.EPERM: ("the operation is not permitted", "choose a place you may use"),
    errno.EROFS: ("the file system is read-only", "choose a writable place"),
    errno.EBUSY: (
        "it is busy (a mount point, or in use by another program)",
        "choose a folder inside it or another place",
    ),
    errno.ENOENT: (
        "it does not exist (or vanished while edgeport used it)",
        "check the path and that nothing else removes it meanwhile",
    ),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EISDIR: ("it is a folder", "name a file"),
    errno.ENAMETOOLONG: ("the name is too long for the file system", "choose a shorter path"),
    errno.EMFILE: ("this process has too many open files", "raise the limit (ulimit -n)"),
    errno.EIO: ("the device reported an input/output error", "check the disk"),
}


def storage_error(exc: OSError, path: str | Path, action: str) -> StorageError:
    """``exc``, raised while edgeport was to ``action`` ("write", "read", "replace", ...)
    ``path``, as a :class:`StorageError` that names the path, the cause and what to do."""
    cause, advice = _CAUSES.get(exc.errno or 0, (exc.strerror or str(exc), "check the path"))
    return StorageError(
        f"cannot {action} {path}: {cause}; {advice}",
        errno=exc.errno,
        filename=str(path),
    )


def _ours(exc: OSError, *paths: Path) -> bool:
    """Whether ``exc`` concerns one of ``paths`` (or no file at all, as a failed write)."""
    return exc.filename is None or Path(os.fsdecode(exc.filename)) in paths


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary handle on a new temporary file beside ``path``: when the block ends without an
    error the file is fsynced and renamed to ``path``, otherwise it is removed (``path`` keeps
    what it held). For files written piece by piece (``atomic_write_bytes`` writes at once).

    The temporary file is created with mode 0666, so the umask gives it the usual permissions of
    a new file (mkstemp's would be 0600), without reading the process-wide umask. An ``OSError``
    of this file (no space, a read-only file system, ...) is raised as a :class:`StorageError`
    naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    try:
        make_dirs(path.parent)
        fd = os.open(tmp, _CREATE_NEW, 0o666)
    except OSError as exc:
        raise storage_error(exc, path, "write") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException as exc:
        _remove_quietly(tmp)
        if isinstance(exc, OSError) and _ours(exc, path, tmp, path.parent):
            raise storage_error(exc, path, "write") from exc
        raise


def _remove_quietly(path: Path) -> None:
    """Remove a temporary file on the way out of an error (a second error must not hide it)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return


def check_writable(*paths: str | Path | None) -> None:
    """Fail now, before long work, when a result could not be written to ``paths`` later
    (its folder cannot be made, or no file can be created in it): ``StorageError``. A full disk
    may still let this pass; the write itself then says so."""
    for path in paths:
        if path is None:
            continue
        folder = make_dirs(Path(path).parent)
        probe = folder / f".edgeport-probe-{os.urandom(8).hex()}"
        try:
            os.close(os.open(probe, _CREATE_NEW, 0o600))
            probe.unlink()
        except OSError as exc:
            raise storage_error(exc, path, "write") from exc


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p path``; a :class:`StorageError` naming the folder when it cannot be made."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, path, "create the folder") from exc
    return path


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
    try:
        with Path(path).open("rb") as handle:
            while chunk := handle.read(chunk_size):
                digest.update(chunk)
    except OSError as exc:
        raise storage_error(exc, path, "read") from exc
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
        try:
            data = handle.read(size)  # the size fstat gave (read(n) allocates n bytes up front)
        except OSError as exc:
            raise ModelLoadError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
        if len(data) != size:
            raise ModelLoadError(f"{what} {path} changed size while being read; try again")
        return data


def cache_dir(name: str) -> Path | None:
    """Where edgeport keeps ``name`` (compiled models, tuning records) for this user:
    ``$EDGEPORT_CACHE_DIR/name``, else ``$XDG_CACHE_HOME/edgeport/name`` or
    ``~/.cache/edgeport/name``; None when none is set and this user has no home folder. Nothing
    is created here."""
    root = os.environ.get("EDGEPORT_CACHE_DIR")
    if root:
        return Path(root) / name
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "edgeport" / name
    home = Path("~").expanduser()
    if not home.is_absolute():  # no $HOME and no password entry: "~" stays as it is
        return None
    return home / ".cache" / "edgeport" / name
