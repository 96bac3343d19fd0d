"""The record each backend module exports to describe itself (:class:`BackendSpec`), and what a
backend is opened with (:class:`OpenRequest`).

The registry (:mod:`edgeport.runtime.backends.registry`) holds the records; ``load``,
``explain``, ``inspect``, ``bench``, ``tune``, cold start, ``serve`` and the CLI's ``--backend``
choices read them, so a backend is added by one module that exports its record (and
``registry.register`` for one that lives outside edgeport).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend, ModelBytes
from edgeport.runtime.bundle import Artifact, EngineInfo
from edgeport.runtime.errors import ConfigError

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class ModelFile:
    """One model file that some backend might run."""

    format: str  # one of bundle.FORMATS
    precision: str | None  # None when a bare file does not tell
    path: Path  # where the file is (not yet verified)
    label: str  # the artifact name, or the file name
    artifact: Artifact | None = None
    engine: EngineInfo | None = None
    bundle_dir: Path | None = None  # set when the file is described by a bundle manifest

    @property
    def parity_passed(self) -> bool | None:
        return self.artifact.parity_passed if self.artifact else None

    @property
    def target(self) -> str | None:
        """The engine family the file was made for; None: any that runs its format."""
        return self.artifact.target if self.artifact else None

    @property
    def parity_failures(self) -> list[str]:
        if self.artifact is None or not self.artifact.parity:
            return []
        return [str(f) for f in self.artifact.parity.get("failures", [])]


@dataclass(frozen=True)
class OpenRequest:
    """Everything a backend is opened with: the bytes ``load`` read (and verified) once, the
    file they came from, the tensor names the manifest or model card declares (a format that
    does not keep names, such as ``.pte``, takes them from here), and ``load``'s settings."""

    model: ModelBytes
    file: ModelFile
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    threads: int | None = None
    device_index: int = 0
    cuda_graph: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # load's backend_options

    @property
    def precision(self) -> str:
        return self.file.precision or "fp32"


# A per-layer profile of validated inputs: (arrays, tools.profile.ProfileConfig) -> LayerProfile
Profile = Callable[[Sequence[np.ndarray], Any], Any]


@dataclass(frozen=True)
class BackendSpec:
    """What one backend is: its name, what it runs and where, how ``auto`` ranks what it runs,
    why it cannot run here, how to open it, its profiler and the packages it runs on.

    ``formats``: the artifact formats it opens, its main one first (at one precision the others,
    e.g. OpenVINO's own IR, are tried before the main one). ``target``: the engine family whose
    artifacts it runs (``Artifact.target``). ``precisions``: fastest first, the order
    ``precision=None`` tries. ``unavailable(file, device_index)``: why it cannot run here (``file``
    None: at all), decided without opening anything. ``open(request)``: the opened model, or
    ``BackendUnavailable``. ``profiler(name, file, threads)``: a per-layer profile function, None
    when it has none. ``packages``: the distributions whose versions a tuning record and an
    environment report keep. ``auto``: whether ``backend="auto"`` tries it (``manual_reason``
    says why not, in ``explain``). ``per_file``: whether ``unavailable`` depends on the file (a
    TensorRT engine's GPU and version), so it is asked for each one. ``optional_format``: auto
    says nothing of it for a model without files it runs (the phone formats' runtimes).
    ``threads``/``options``: whether it takes ``load``'s ``threads`` and ``backend_options``.
    ``precision_unavailable(precision)``: why it cannot run artifacts of that precision on this
    machine (bf16 needs a CPU with bf16 arithmetic), None when it can; None: any it lists.
    """

    name: str
    formats: tuple[str, ...]
    target: str
    device: str
    precisions: tuple[str, ...]
    unavailable: Callable[[ModelFile | None, int], str | None]
    open: Callable[[OpenRequest], Backend]
    profiler: Callable[[str, ModelFile, int | None], Profile] | None = None
    precision_unavailable: Callable[[str], str | None] | None = None
    packages: tuple[str, ...] = ()
    auto: bool = True
    manual_reason: str = ""
    per_file: bool = False
    optional_format: bool = False
    threads: bool = True
    options: bool = False

    def __post_init__(self) -> None:
        if not self.name or self.name == "auto":
            raise ConfigError(f"a backend needs a name other than 'auto', got {self.name!r}")
        if not self.formats or not self.precisions:
            raise ConfigError(f"backend {self.name!r} must name its formats and precisions")
        if self.device not in DEVICES:
            raise ConfigError(
                f"backend {self.name!r}: device must be one of {DEVICES}, got {self.device!r}"
            )

    @property
    def format(self) -> str:
        """Its main format."""
        return self.formats[0]

    @property
    def formats_text(self) -> str:
        return " and ".join(self.formats)

    def runs(self, fmt: str) -> bool:
        """Whether it opens files of the artifact format ``fmt``."""
        return fmt in self.formats
