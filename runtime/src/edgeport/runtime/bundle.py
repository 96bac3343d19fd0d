"""The bundle: the directory copied to a device, described by ``manifest.json``.

The manifest lists every artifact (format, precision, the engine it was made for, relative
path, sha256, size, inputs and outputs with the range of every dynamic dimension, tool
versions, parity results, for an int8 file how it was quantized and what it gained and, for an
engine, the TensorRT flavour, version and compute capability) next to the model card and the
export settings. Export writes it; the runtime reads and verifies it. Paths are always relative
and must stay inside the bundle. Manifests of schema 1 (one image input, one logits output) and
2 (no artifact targets) still load.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import ConfigError, InputError, IntegrityError, ModelLoadError
from edgeport.runtime.io import atomic_write_json, read_regular_file, sha256_file
from edgeport.runtime.schema import decode, parse_json
from edgeport.runtime.specs import UNBOUNDED, TensorSpec

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 3
MAX_MANIFEST_BYTES = 64 << 20
# onnx, TensorRT engines, OpenVINO IR (.xml + .bin), ExecuTorch .pte, LiteRT .tflite
FORMATS = ("onnx", "tensorrt", "openvino", "executorch", "litert")
# bf16: the fp32 ONNX file run with bf16 arithmetic by an engine that has it (OpenVINO on CPUs
# with AVX512_BF16 or AMX); its artifact names the fp32 file and the engine family it was judged on
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
ENGINE_FLAVOURS = ("tensorrt", "tensorrt_rtx")
# The engine families an artifact can be made for: each fuses a different int8 form, so an
# int8 file is quantized, timed and judged for one of them and run only by its backends.
TARGETS = ("onnxruntime", "openvino", "tensorrt", "executorch", "litert")
MAX_BATCH = 65536  # the largest batch an export can be asked for
MAX_MIN_BATCH = 1024  # inputs are padded up to an artifact's min batch: bounded by this
_BATCH_RE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*:\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an artifact accepts; ``opt`` is what a TensorRT profile tunes for."""

    min: int = 1
    opt: int = 1
    max: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max <= UNBOUNDED:
            raise ConfigError(
                f"batch range must satisfy 1 <= min <= opt <= max, got "
                f"{self.min}:{self.opt}:{self.max}"
            )

    @classmethod
    def parse(cls, text: str) -> BatchRange:
        """Parse ``MIN:OPT:MAX`` or a single fixed size ``N``."""
        match = _BATCH_RE.match(text)
        if not match:
            raise ConfigError(f"batch range must look like MIN:OPT:MAX or N, got {text!r}")
        low, opt, high = match.groups()
        if opt is None:
            opt = high = low
        if int(high) > MAX_BATCH:
            raise ConfigError(f"batch sizes above {MAX_BATCH} are not supported, got {text!r}")
        return cls(int(low), int(opt), int(high))

    def __contains__(self, batch: object) -> bool:
        return isinstance(batch, int) and self.min <= batch <= self.max

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class EngineInfo:
    """What a TensorRT plan was built with; the runtime refuses a plan built for elsewhere."""

    flavour: str  # "tensorrt" or "tensorrt_rtx"
    version: str
    compute_capability: str | None = None  # "9.0"; None when built for any (RTX AOT, compat)
    hardware_compatibility: str = "none"
    timing_cache: str | None = None  # relative path of the timing cache kept in the bundle
    workspace_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.flavour not in ENGINE_FLAVOURS:
            raise InputError(
                f"engine flavour must be one of {ENGINE_FLAVOURS}, got {self.flavour!r}"
            )


@dataclass(frozen=True)
class SideFile:
    """Another file an artifact needs (an OpenVINO IR's weights ``.bin``), verified like the
    artifact's own file."""

    sha256: str
    size_bytes: int

    def __post_init__(self) -> None:
        if self.size_bytes < 0:
            raise InputError(f"a side file has a negative size {self.size_bytes}")


@dataclass(frozen=True)
class Artifact:
    """One exported model file inside a bundle, with the exact inputs and outputs it has and the
    range of every dynamic dimension it was built (an engine profile) or checked for."""

    name: str
    format: str
    precision: str
    path: str
    sha256: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tools: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] | None = None
    engine: EngineInfo | None = None
    source: str | None = None  # name of the artifact this one was built from
    target: str | None = None  # the engine family it was made for (TARGETS); None: any
    # an int8 file: its quantizer and settings, the layers kept in float, its measured
    # speed-up over fp32 on its target engine and the verdict (see edgeport.export.int8)
    quantization: dict[str, Any] | None = None
    # other files the artifact needs (an OpenVINO IR's weights .bin), by relative path
    files: dict[str, SideFile] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InputError(f"artifact format must be one of {FORMATS}, got {self.format!r}")
        if self.target is not None and self.target not in TARGETS:
            raise InputError(
                f"artifact {self.name!r}: target must be one of {TARGETS} or null, "
                f"got {self.target!r}"
            )
        if self.precision not in PRECISIONS:
            raise InputError(
                f"artifact precision must be one of {PRECISIONS}, got {self.precision!r}"
            )
        if self.format == "tensorrt" and self.engine is None:
            raise InputError(f"TensorRT artifact {self.name!r} has no engine information")
        if not self.inputs or not self.outputs:
            raise InputError(f"artifact {self.name!r} lists no inputs or no outputs")
        _check_relative(self.path, f"artifact {self.name!r}")
        for rel in self.files:
            _check_relative(rel, f"artifact {self.name!r} file")
        if self.path in self.files:
            raise InputError(f"artifact {self.name!r} lists its own file {self.path!r} in files")
        if self.size_bytes < 0:
            raise InputError(f"artifact {self.name!r} has a negative size {self.size_bytes}")
        for spec in self.inputs:  # the batch axis and dynamic ones are padded, fixed ones not
            padded = [r for axis, r in enumerate(spec.all_ranges) if axis == 0 or r[0] != r[2]]
            low = max((r[0] for r in padded), default=1)
            if low > MAX_MIN_BATCH:
                raise InputError(
                    f"artifact {self.name!r} input {spec.name!r} declares a minimum dimension of "
                    f"{low}, above the {MAX_MIN_BATCH} edgeport pads inputs up to"
                )
        _check_parity(self.name, self.parity)

    @property
    def batch(self) -> BatchRange:
        """The range of the first input's leading (batch) axis."""
        return leading_range(self.inputs[0])

    @property
    def total_bytes(self) -> int:
        """The size of the artifact's file and of the other files it needs."""
        return self.size_bytes + sum(f.size_bytes for f in self.files.values())

    @property
    def parity_passed(self) -> bool | None:
        """True/False from the export gate, None when parity was not checked (or not run)."""
        if not self.parity or self.parity.get("passed") is None:
            return None
        return bool(self.parity.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = [s.to_dict() for s in self.inputs]
        data["outputs"] = [s.to_dict() for s in self.outputs]
        if not self.files:
            del data["files"]  # as schema-3 readers without it expect
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        if isinstance(data, dict) and "inputs" not in data and "input_name" in data:
            data = _artifact_v1(data)
        return decode(data, cls, "artifact entry")


def leading_range(spec: TensorSpec) -> BatchRange:
    """The range of ``spec``'s leading (batch) axis; 1..1 for a scalar."""
    if spec.rank == 0:
        return BatchRange(1, 1, 1)
    low, opt, high = spec.dim_range(0)
    return BatchRange(max(low, 1), max(opt, 1), max(high, 1))


def _check_parity(name: str, parity: dict[str, Any] | None) -> None:
    """The parity fields the runtime acts on must have their types (``"false"`` is no bool)."""
    if parity is None:
        return
    passed, failures = parity.get("passed"), parity.get("failures", [])
    if passed is not None and not isinstance(passed, bool):
        raise InputError(
            f"artifact {name!r}: parity.passed must be true, false or null, got {passed!r}"
        )
    if not isinstance(failures, list) or not all(isinstance(f, str) for f in failures):
        raise InputError(f"artifact {name!r}: parity.failures must be a list of strings")


def classifier_specs(
    chw: tuple[int, ...],
    num_classes: int | None,
    batch: BatchRange,
    *,
    input_name: str = "input",
    output_name: str = "logits",
) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs of an image classifier: float32 ``input`` ["batch", C, H, W] in
    the batch range, float32 ``logits`` ["batch", classes]."""
    batch_range = (batch.min, batch.opt, batch.max)
    image = TensorSpec(
        input_name,
        "float32",
        ("batch", *chw),
        (batch_range, *((d, d, d) for d in chw)),
    )
    classes = (num_classes, num_classes, num_classes) if num_classes else (1, 1, 2**31 - 1)
    logits = TensorSpec(output_name, "float32", ("batch", num_classes), (batch_range, classes))
    return (image,), (logits,)


def _artifact_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 artifact entry (one float32 image input and one logits output, described by
    input_name, output_name, input_shape and batch) in the schema-2 form."""
    data = dict(data)
    batch = decode(data.pop("batch", None), BatchRange, "artifact batch range")
    shape = data.pop("input_shape", None)
    if not isinstance(shape, list) or not shape:
        raise InputError(f"artifact input_shape must be a non-empty list, got {shape!r}")
    ranges = [[batch.min, batch.opt, batch.max]] + [[d, d, d] for d in shape[1:]]
    first = shape[0] if isinstance(shape[0], str) else "batch"
    data["inputs"] = [
        {"name": data.pop("input_name"), "dtype": "float32", "shape": shape, "ranges": ranges}
    ]
    output = data.pop("output_name", None)
    data["outputs"] = [{"name": output, "dtype": "float32", "shape": [first, None]}]
    return data


@dataclass(frozen=True)
class ReferenceInfo:
    """The typed view of ``manifest.reference`` (validated; the manifest keeps the dict)."""

    inputs: str | None = None
    outputs: str | None = None
    labels: str | None = None
    weights: str | None = None
    logits: str | None = None  # schema 1
    sha256: dict[str, str] = field(default_factory=dict)
    dataset: str | None = None
    split: str | None = None
    count: int = 0
    accuracy: float | None = None

    def __post_init__(self) -> None:
        for rel in (self.inputs, self.outputs, self.labels, self.weights, self.logits):
            if rel is not None:
                _check_relative(rel, "reference file")


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``."""

    card: ModelCard
    artifacts: tuple[Artifact, ...]
    export: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] | None = None  # stored inputs/outputs for checks without torch
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def __post_init__(self) -> None:
        names = [a.name for a in self.artifacts]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise InputError(f"manifest lists artifacts {doubled} more than once")
        if not 1 <= self.schema_version <= MANIFEST_SCHEMA_VERSION:
            raise InputError(
                f"manifest schema {self.schema_version} is not one this edgeport reads "
                f"(1..{MANIFEST_SCHEMA_VERSION}); upgrade edgeport-runtime"
            )
        if self.reference is not None:
            decode(self.reference, ReferenceInfo, "manifest reference")

    def artifact(self, name: str) -> Artifact:
        for art in self.artifacts:
            if art.name == name:
                return art
        raise ConfigError(
            f"no artifact named {name!r}; this bundle has {[a.name for a in self.artifacts]}"
        )

    def with_artifact(self, artifact: Artifact) -> Manifest:
        """A copy with ``artifact`` added, or replacing the one with the same name."""
        kept = tuple(a for a in self.artifacts if a.name != artifact.name)
        return replace(self, artifacts=(*kept, artifact))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "created": self.created,
            "versions": dict(self.versions),
            "card": self.card.to_dict(),
            "export": self.export,
            "reference": self.reference,
            "artifacts": [a.to_dict() for a in self.artifacts],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from parsed JSON, every field type-checked (:mod:`edgeport.runtime.schema`);
        schema 1 is upgraded first."""
        if not isinstance(data, dict):
            raise InputError(f"manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if type(version) is not int or not 1 <= version <= MANIFEST_SCHEMA_VERSION:
            raise InputError(
                f"manifest schema_version {version!r} is not one this edgeport reads "
                f"(1..{MANIFEST_SCHEMA_VERSION}); upgrade edgeport-runtime"
            )
        if version == 1 and isinstance(data.get("artifacts"), list):
            data = {
                **data,
                "artifacts": [
                    _artifact_v1(a) if isinstance(a, dict) and "input_name" in a else a
                    for a in data["artifacts"]
                ],
            }
        return decode(data, cls, "manifest")

    @classmethod
    def load(cls, bundle_dir: str | Path) -> Manifest:
        """Read and validate ``bundle_dir/manifest.json``."""
        return cls.read(bundle_dir)[0]

    @classmethod
    def read(cls, bundle_dir: str | Path) -> tuple[Manifest, str]:
        """The validated manifest and the sha256 of the very bytes it was parsed from."""
        path = Path(bundle_dir) / MANIFEST_NAME
        if not path.exists() and not path.is_symlink():
            raise ModelLoadError(f"{bundle_dir} is not a bundle: {MANIFEST_NAME} not found in it")
        data = read_regular_file(path, what="bundle manifest", max_bytes=MAX_MANIFEST_BYTES)
        try:
            return cls.from_dict(parse_json(data, "manifest")), hashlib.sha256(data).hexdigest()
        except InputError as exc:
            raise ModelLoadError(f"bundle manifest {path} is invalid: {exc}") from exc

    def save(self, bundle_dir: str | Path) -> Path:
        return atomic_write_json(Path(bundle_dir) / MANIFEST_NAME, self.to_dict())


def _check_relative(rel: str, what: str) -> None:
    if not rel or "\x00" in rel:
        raise InputError(f"{what} path must be a non-empty name without NUL bytes, got {rel!r}")
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts:
        raise InputError(f"{what} path must be relative and inside the bundle, got {rel!r}")


def resolve_inside(bundle_dir: str | Path, rel: str) -> Path:
    """Resolve ``rel`` against the bundle, refusing anything (links included) that leaves it."""
    root = Path(bundle_dir).resolve()
    _check_relative(rel, "bundle file")
    target = (root / rel).resolve()
    if root != target and root not in target.parents:
        raise ModelLoadError(f"{rel!r} resolves to {target}, outside the bundle {root}")
    return target


def artifact_path(bundle_dir: str | Path, artifact: Artifact) -> Path:
    """The artifact's path inside the bundle, after checking that it and the other files it
    needs exist (no hashing)."""
    return artifact_files(bundle_dir, artifact)[0][0]


def artifact_files(bundle_dir: str | Path, artifact: Artifact) -> list[tuple[Path, SideFile]]:
    """Every file of the artifact inside the bundle, its own first then ``files``, each with
    what the manifest says of it, after checking that each exists (no hashing)."""
    own = (artifact.path, SideFile(artifact.sha256, artifact.size_bytes))
    out = []
    for rel, entry in (own, *artifact.files.items()):
        file = resolve_inside(bundle_dir, rel)
        if not file.is_file():
            raise ModelLoadError(f"artifact {artifact.name!r} is missing: {file}")
        out.append((file, entry))
    return out


def verify_artifact(bundle_dir: str | Path, artifact: Artifact) -> Path:
    """Return the artifact's path after checking that it and every other file it needs exist
    and match their size and sha256 (for tools that hand the path on; ``load`` hashes the very
    bytes it runs instead)."""
    files = artifact_files(bundle_dir, artifact)
    for file, entry in files:
        size = file.stat().st_size
        check_integrity(artifact, file, size, entry=entry)  # before hashing a wrong size
        check_integrity(artifact, file, size, sha256_file(file), entry=entry)
    return files[0][0]


def check_integrity(
    artifact: Artifact,
    path: Path,
    size: int,
    digest: str | None = None,
    *,
    entry: SideFile | None = None,
) -> None:
    """``IntegrityError`` when a file's size (or, given, its sha256) is not the manifest's: the
    artifact's own file, or the one of its ``files`` that ``entry`` describes."""
    want = entry or SideFile(artifact.sha256, artifact.size_bytes)
    if size != want.size_bytes:
        raise IntegrityError(
            f"artifact {artifact.name!r} at {path} has {size} bytes, the manifest says "
            f"{want.size_bytes}: the file is truncated or was replaced; re-export the bundle"
        )
    if digest is not None and digest != want.sha256:
        raise IntegrityError(
            f"artifact {artifact.name!r} at {path} has sha256 {digest}, the manifest says "
            f"{want.sha256}: the file was modified or corrupted; re-export the bundle"
        )
