"""The one exception family of edgeport: every error a user can cause is an ``EdgeportError``."""

from __future__ import annotations


class EdgeportError(Exception):
    """Base class of every error edgeport raises on purpose."""


class InputError(EdgeportError, ValueError):
    """Data handed to a model or command is not what it expects (shape, dtype, values)."""


class ConfigError(EdgeportError, ValueError):
    """A setting is invalid: unknown model, dataset, precision, backend or a bad range."""


class DatasetError(EdgeportError):
    """A dataset cannot be found or read."""


class ModelLoadError(EdgeportError):
    """A checkpoint, bundle or artifact is missing, truncated, corrupt or does not match."""


class IntegrityError(ModelLoadError):
    """A model file's bytes are not the ones its manifest describes (size or sha256 differ), so
    its recorded parity does not apply to it: it is never run."""


class StorageError(EdgeportError, OSError):
    """A file or folder edgeport was asked to read or write cannot be: no space left, permission
    denied, a read-only file system, busy, or gone. Names the path and what to do; still an
    ``OSError`` (with its ``errno`` and ``filename``) for code that catches those."""

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None):
        super().__init__(message)
        self.errno, self.filename = errno, filename

    def __str__(self) -> str:
        return str(self.args[0])


class BackendUnavailable(EdgeportError):
    """An inference backend cannot run here (library missing, no GPU, incompatible engine)."""


class ExportError(EdgeportError):
    """An export step failed (unsupported operator, builder error)."""


class ParityError(EdgeportError):
    """An exported artifact does not agree with the reference within its tolerance."""


class NonFiniteOutputWarning(RuntimeWarning):
    """A model returned NaN or Inf from finite inputs (overflow in fp16, a broken artifact).
    ``load(..., check_outputs=False)`` stops the check; ``warnings.simplefilter("error",
    NonFiniteOutputWarning)`` turns it into an exception."""
