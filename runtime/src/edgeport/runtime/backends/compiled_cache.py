"""A cache of compiled models that is verified before use.

An engine's compiled form (OpenVINO's exported ``CompiledModel``) is imported without the
checks the source model had, so a flipped byte in a cached blob would run as a wrong model and
a FIFO in its place would block the import forever. Each entry is therefore one file, written
atomically, that carries the sha256 of its blob, recorded when it was written::

    edgeport-compiled-cache 1\\n<64 hex digits of sha256(blob)>\\n<blob>

:meth:`CompiledCache.get` opens an entry without blocking, refuses anything but a regular file,
and returns the blob only when its hash matches; otherwise the caller compiles again and
:meth:`CompiledCache.put` replaces the entry. A cache that cannot be written (a read-only file
system, a home folder that does not exist, no permission) is no cache: one warning per folder,
then the model is compiled on every load.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from edgeport.runtime.errors import ModelLoadError, StorageError
from edgeport.runtime.io import atomic_write_bytes, read_regular_file

log = logging.getLogger(__name__)

MAGIC = b"edgeport-compiled-cache 1\n"
_HEADER = len(MAGIC) + 64 + 1
MAX_BYTES = 16 << 30  # an entry larger than this is not one edgeport wrote
_warned: set[Path] = set()  # folders already warned about, once per process
_warned_lock = threading.Lock()


def warn_once(root: Path, message: str, *args: object) -> None:
    """Log ``message`` once per process for the cache folder ``root``."""
    with _warned_lock:
        if root in _warned:
            return
        _warned.add(root)
    log.warning(message, *args)


@dataclass(frozen=True)
class CompiledCache:
    """Entries ``<key>.blob`` in ``root`` (created when the first entry is written)."""

    root: Path

    def entry(self, key: str) -> Path:
        return self.root / f"{key}.blob"

    def get(self, key: str) -> bytes | None:
        """The blob stored under ``key`` if it is there, a regular file and whole; None
        otherwise (a damaged or foreign entry is logged and left to :meth:`put` to replace)."""
        path = self.entry(key)
        try:
            path.lstat()
        except FileNotFoundError:
            return None
        except OSError as exc:  # no permission, a file where the folder should be
            warn_once(self.root, "not using the compiled-model cache %s: %s", self.root, exc)
            return None
        try:
            data = read_regular_file(path, what="compiled-model cache entry", max_bytes=MAX_BYTES)
        except ModelLoadError as exc:
            log.warning("%s; compiling again", exc)
            return None
        recorded = data[len(MAGIC) : _HEADER - 1]
        blob = data[_HEADER:]
        if (
            not data.startswith(MAGIC)
            or data[_HEADER - 1 : _HEADER] != b"\n"
            or hashlib.sha256(blob).hexdigest().encode() != recorded
        ):
            log.warning(
                "the compiled-model cache entry %s does not match the sha256 recorded when it "
                "was written (damaged, truncated or replaced); compiling again",
                path,
            )
            return None
        return blob

    def put(self, key: str, blob: bytes) -> bool:
        """Store ``blob`` under ``key`` with its hash; False (and one warning per folder) when
        the cache cannot be written, which leaves the caller running without it."""
        digest = hashlib.sha256(blob).hexdigest().encode()
        try:
            atomic_write_bytes(self.entry(key), MAGIC + digest + b"\n" + blob)
        except StorageError as exc:
            warn_once(
                self.root,
                "not caching compiled models: %s. Models are compiled on every load; set "
                "EDGEPORT_CACHE_DIR to a writable folder to cache them",
                exc,
            )
            return False
        return True
