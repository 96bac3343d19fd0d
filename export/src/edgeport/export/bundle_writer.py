"""Write a bundle so that its destination only ever holds a complete bundle.

Everything is written into a staging directory next to the destination (same filesystem),
then swapped into place:

- on Linux with ``renameat2(RENAME_EXCHANGE)``: the old and new directories trade places in
  one atomic step, then the old one (now at the staging path) is deleted;
- elsewhere: the old bundle is renamed aside, the new one renamed in, the old one deleted. If
  the process dies between the two renames, the next export (or ``recover``) puts the old
  bundle back.

A failed or killed export leaves the destination untouched; a fault of the machine while
staging or swapping (no space left, a read-only file system, a destination that is a mount
point) is raised as a ``StorageError`` naming the bundle and what to do. Staging directories of
exports that were killed (their process is gone) are removed by the next export to the same
parent.
Exports to one destination are serialised by an exclusive lock (``fcntl.flock`` on
``.<name>.lock`` beside it): a second export waits for the first (up to ``lock_timeout_s``),
then writes; it never races the first's rename.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from edgeport.runtime.bundle import MANIFEST_NAME
from edgeport.runtime.errors import ConfigError, ExportError, StorageError
from edgeport.runtime.io import storage_error

log = logging.getLogger(__name__)

OWNER_SUFFIX = ".owner"  # beside each staging dir: "host pid" of the export writing it
LOCK_TIMEOUT_S = 600.0
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _staging_prefix(dest: Path) -> str:
    return f".{dest.name}.partial-"


def _aside_prefix(dest: Path) -> str:
    return f".{dest.name}.old-"


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # directories cannot be opened for fsync there
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # glibc < 2.28
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # kernel or filesystem without RENAME_EXCHANGE
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_bundle_or_empty(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file() or not any(path.iterdir())


def recover(dest: str | Path) -> None:
    """Undo a replacement interrupted between its two renames; remove dead exports' staging."""
    dest = Path(dest).absolute()
    parent = dest.parent
    if not parent.is_dir():
        return
    asides = sorted(p for p in parent.glob(_aside_prefix(dest) + "*") if p.is_dir())
    if asides and not dest.exists():
        newest = max(asides, key=lambda p: p.stat().st_mtime)
        log.warning("restoring %s from %s (a previous export was interrupted)", dest, newest)
        newest.rename(dest)
        asides.remove(newest)
    for aside in asides:
        if dest.exists():
            shutil.rmtree(aside, ignore_errors=True)
    for owner in parent.glob(_staging_prefix(dest) + "*" + OWNER_SUFFIX):
        try:
            host, pid = owner.read_text(encoding="utf-8").split()
        except (OSError, ValueError):
            continue  # being written right now
        if host == socket.gethostname() and not _pid_alive(int(pid)):
            staging = owner.with_name(owner.name[: -len(OWNER_SUFFIX)])
            log.info("removing %s, left by an export that was killed", staging)
            shutil.rmtree(staging, ignore_errors=True)
            owner.unlink(missing_ok=True)


class BundleWriter:
    """``with BundleWriter(dest) as w: ...write under w.root...; w.commit()``.

    Leaving the block without ``commit`` (an exception, a failed gate) deletes the staging
    directory and leaves ``dest`` as it was. ``dest`` may be absent, an empty directory or an
    existing bundle; anything else is refused so a typo cannot delete a user's directory.
    """

    def __init__(self, dest: str | Path, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.dest = Path(dest).absolute()
        self.root: Path = Path()
        self.committed = False
        self.lock_timeout_s = lock_timeout_s
        self._lock_fd: int | None = None

    @property
    def _owner(self) -> Path:
        return self.root.with_name(self.root.name + OWNER_SUFFIX)

    def check_destination(self) -> None:
        dest = self.dest
        blocked = next((p for p in dest.parents if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise ConfigError(f"--out {dest}: {blocked} is a file, not a directory")
        if dest.exists() and not dest.is_dir():
            raise ConfigError(f"--out {dest} exists and is a file; name a directory for the bundle")
        if dest.is_dir() and not _is_bundle_or_empty(dest):
            raise ConfigError(
                f"--out {dest} is a non-empty directory without {MANIFEST_NAME}: refusing to "
                "replace it. Name a new directory or an existing bundle"
            )

    def __enter__(self) -> BundleWriter:
        self.check_destination()
        try:
            self.dest.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            recover(self.dest)
            # mkdir (not mkdtemp's 0700) so the umask gives the bundle a normal directory's mode
            root = self.dest.parent / f"{_staging_prefix(self.dest)}{secrets.token_hex(4)}"
            root.mkdir()
            self.root = root
            self._owner.write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
        except OSError as exc:
            self._clean_up()
            raise self._storage_error(exc) from exc
        log.debug("staging bundle in %s", self.root)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._clean_up()
        if isinstance(exc, OSError):
            raise self._storage_error(exc) from exc

    def _clean_up(self) -> None:
        """Remove what was staged (unless committed) and release the lock."""
        if self.root != Path():  # staging began
            if not self.committed and self.root.exists():
                shutil.rmtree(self.root, ignore_errors=True)
            with contextlib.suppress(OSError):  # the staging folder's parent may be gone
                self._owner.unlink(missing_ok=True)
        self._unlock()

    def _storage_error(self, exc: OSError) -> StorageError:
        """``exc`` while staging or swapping the bundle, as an error naming the bundle."""
        if exc.errno == errno.EBUSY:
            return StorageError(
                f"cannot replace the bundle {self.dest}: it is busy, e.g. a mount point, which "
                "cannot be swapped for a new folder; export into a folder inside it (--out "
                f"{self.dest / 'bundle'}) or to another place",
                errno=exc.errno,
                filename=str(self.dest),
            )
        error = storage_error(exc, self.dest, "write the bundle")
        return StorageError(
            f"{error} (the bundle is left as it was)", errno=exc.errno, filename=str(self.dest)
        )

    def _lock(self) -> None:
        """Hold ``.<name>.lock`` exclusively, waiting up to ``lock_timeout_s`` for another
        export to the same destination to finish."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; exports there are not serialised
            return
        path = self.dest.parent / f".{self.dest.name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.lock_timeout_s
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ConfigError(
                        f"another export is writing {self.dest} (lock {path} held for more than "
                        f"{self.lock_timeout_s:g} s); wait for it or choose another --out"
                    ) from None
                if not waiting:
                    log.warning("waiting for another export to %s to finish", self.dest)
                    waiting = True
                time.sleep(0.2)
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    def commit(self) -> Path:
        """Swap the staged bundle into ``dest``; the old bundle (if any) is deleted after."""
        if self.committed:
            raise ExportError(f"bundle {self.dest} was already committed")
        if not (self.root / MANIFEST_NAME).is_file():
            raise ExportError(f"refusing to commit {self.root}: it has no {MANIFEST_NAME}")
        self.check_destination()  # again: something may have appeared meanwhile
        for current, _dirs, _files in os.walk(self.root):
            _fsync_dir(Path(current))
        if self.dest.exists():
            self._replace_existing()
        else:
            self.root.rename(self.dest)
        _fsync_dir(self.dest.parent)
        self.committed = True
        log.info("bundle written to %s", self.dest)
        return self.dest

    def _replace_existing(self) -> None:
        if _exchange(self.root, self.dest):
            shutil.rmtree(self.root)  # the old bundle now lives at the staging path
            return
        aside = self.dest.parent / f"{_aside_prefix(self.dest)}{secrets.token_hex(4)}"
        self.dest.rename(aside)
        try:
            self.root.rename(self.dest)
        except OSError:
            with contextlib.suppress(OSError):
                aside.rename(self.dest)
            raise
        shutil.rmtree(aside, ignore_errors=True)
