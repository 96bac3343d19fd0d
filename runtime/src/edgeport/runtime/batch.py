"""Batch inference on Ray Data: many inputs through an actor pool of edgeport Models, one
Parquet row per input.

``predict_batch(BatchConfig(...))`` lists the inputs on the driver (image files of folders,
recursively, or the rows of one ``.npz``/``.parquet`` of tensors), hands them to Ray Data in
blocks of ``batch`` rows, and runs ``map_batches`` on a fixed pool of ``workers`` actors
(``ray.data.ActorPoolStrategy``), each of which ``load()``s the model once with ``threads``
ONNX Runtime threads. Images are decoded and preprocessed inside the actors by
:mod:`edgeport.runtime.preprocess`, exactly as ``Model.predict`` does; an image that does not
decode becomes a row whose ``error`` says why. The driver streams the result batches, in input
order, into one Parquet file written atomically.

Rows: image classifiers (card task ``classification``) give ``path``, ``labels``, ``indices``
and ``scores`` (top-k, most probable first) and ``error``; other image models give ``path``,
one column per output (the sample's output as nested lists) and ``error``; tensor inputs give
``row`` (its index in the input file) and one column per output.

Files are read by the actors, so on a cluster of several machines the inputs must be at the same
path on every node (a shared file system). ray and pyarrow are imported only when used:
``pip install 'edgeport-runtime[batch]'``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeport.runtime.backends.registry import check_backend_name
from edgeport.runtime.bundle import PRECISIONS
from edgeport.runtime.card import ModelCard
from edgeport.runtime.errors import BackendUnavailable, ConfigError, EdgeportError, InputError
from edgeport.runtime.feeds import load_npz
from edgeport.runtime.io import atomic_open
from edgeport.runtime.loader import load
from edgeport.runtime.model import Model
from edgeport.runtime.preprocess import (
    image_files,
    normalize,
    prepare_image,
    set_max_image_pixels,
)
from edgeport.runtime.source import ModelSource, resolve_source
from edgeport.runtime.specs import TensorSpec, numpy_dtype

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'edgeport-runtime[batch]'"
TENSOR_SUFFIXES = (".npz", ".parquet")
MODES = ("classify", "images", "tensors")
_KEYS = {"classify": "path", "images": "path", "tensors": "row"}
_RAY_ADVICE = "\nFailed to apply UDF"
_RAY_ERROR_LOGGERS = (
    "ray.data._internal.execution.streaming_executor_state",
    "ray.data.exceptions",
)


@dataclass(frozen=True)
class BatchConfig:
    """What ``edgeport predict ... --out FILE.parquet`` takes."""

    model: Path
    inputs: tuple[Path, ...]
    out: Path
    workers: int = 1
    batch: int = 32
    threads: int | None = None  # per worker; None: the CPUs of a node shared among the workers
    top_k: int = 5
    backend: str = "auto"
    precision: str | None = None
    device: str | None = None
    allow_failed: bool = False  # as load(): run an asked-for artifact whose parity failed
    ray_address: str | None = None  # None: the running Ray, else a new local one
    max_image_pixels: int | None = None  # None: preprocess.MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be a positive integer, got {value!r}"
            for name, value in (
                ("workers", self.workers),
                ("batch", self.batch),
                ("top_k", self.top_k),
                ("threads", 1 if self.threads is None else self.threads),
            )
            if isinstance(value, bool) or not isinstance(value, int) or value < 1
        ]
        if Path(self.out).suffix.lower() != ".parquet":
            problems.append(f"the output must be a .parquet file, got {self.out}")
        if not self.inputs:
            problems.append("no inputs given: expected image files, folders or one .npz/.parquet")
        if self.precision not in (None, *PRECISIONS):
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if problems:
            raise ConfigError("invalid batch prediction settings: " + "; ".join(problems))
        check_backend_name(self.backend)


@dataclass(frozen=True)
class BatchResult:
    """What a batch run wrote and how long it took (actor start-up and model loads included)."""

    out: str
    mode: str
    rows: int
    errors: int
    workers: int
    threads: int
    batch: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 3)}


def require_ray() -> Any:
    """The ``ray`` module with Ray Data and pyarrow importable, or ``BackendUnavailable``."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
        import ray
        import ray.data
    except ImportError as exc:
        raise BackendUnavailable(
            f"batch inference runs on Ray Data and needs ray[data] and pyarrow ({exc}): "
            f"{INSTALL_HINT}"
        ) from exc
    return ray


def predict_batch(config: BatchConfig) -> BatchResult:
    """Run ``config.model`` over every input on a Ray cluster; write ``config.out``."""
    ray = require_ray()
    source = resolve_source(config.model)
    mode = input_mode(config.inputs, source.card)
    inputs = _inputs(config, source, mode)
    started_here = _connect(ray, config.ray_address)
    try:
        threads = config.threads or _default_threads(ray, config.workers)
        began = time.perf_counter()
        dataset = _pipeline(ray, config, _dataset(ray, inputs, config.batch), mode, threads)
        rows, errors = _write(dataset, config.out, mode)
        seconds = time.perf_counter() - began
    finally:
        if started_here:
            ray.shutdown()
    result = BatchResult(
        str(config.out), mode, rows, errors, config.workers, threads, config.batch, seconds
    )
    log.info("wrote %d rows (%d errors) to %s in %.1f s", rows, errors, config.out, seconds)
    return result


def input_mode(inputs: tuple[Path, ...], card: ModelCard | None) -> str:
    """``tensors`` for one .npz/.parquet file, else ``classify`` or ``images`` by the card."""
    tensor_files = [p for p in inputs if Path(p).suffix.lower() in TENSOR_SUFFIXES]
    if tensor_files:
        if len(inputs) != 1:
            raise ConfigError(
                "give either image files and folders, or one .npz/.parquet file of inputs; got "
                f"{len(inputs)} inputs of which {len(tensor_files)} .npz/.parquet"
            )
        return "tensors"
    if card is None or not card.is_image_model:
        raise ConfigError(
            "images need a model card that says how to preprocess them (a bundle, or an ONNX "
            "file with edgeport.card metadata); this model has none: give one .npz or .parquet "
            "file with one column per model input"
        )
    return "classify" if card.task == "classification" and card.class_names else "images"


# -- inputs ------------------------------------------------------------------------------------


def _inputs(config: BatchConfig, source: ModelSource, mode: str) -> Any:
    """The image paths (a list), or the tensor rows (an Arrow table)."""
    if mode == "tensors":
        inputs = read_tensor_table(config.inputs[0])
        count = inputs.num_rows
    else:
        inputs = [str(p) for p in image_files(config.inputs, recursive=True)]
        count = len(inputs)
    if count == 0:
        raise InputError(f"no inputs to predict in {', '.join(map(str, config.inputs))}")
    log.info("%d inputs for %s (%s)", count, source.path, mode)
    return inputs


def _dataset(ray: Any, inputs: Any, batch: int) -> Any:
    """The inputs as a Ray dataset in blocks of at most ``batch`` rows, in input order, whose
    actors raise an edgeport error as itself (settings of this dataset only)."""
    if isinstance(inputs, list):  # built on the driver: no Ray task reads anything
        blocks = math.ceil(len(inputs) / batch)
        dataset = ray.data.from_items([{"path": p} for p in inputs], override_num_blocks=blocks)
    else:
        step = range(0, inputs.num_rows, batch)
        dataset = ray.data.from_arrow([inputs.slice(start, batch) for start in step])
    dataset.context.execution_options.preserve_order = True
    dataset.context.raise_original_map_exception = True
    return dataset


def read_tensor_table(path: Path) -> Any:
    """One row per sample: a ``row`` index and one nested-list column per array."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.suffix.lower() == ".npz":
        arrays = load_npz(path)
        counts = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
        if not arrays or None in counts.values() or len(set(counts.values())) != 1:
            raise InputError(
                f"{path}: expected arrays with the same number of samples on axis 0, got "
                f"{ {name: list(a.shape) for name, a in arrays.items()} }"
            )
        table = pa.table({name: to_column(a) for name, a in arrays.items()})
    else:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {path} as a Parquet table: {exc}") from exc
    if "row" in table.column_names:
        raise InputError(f"{path} has a column named 'row', which the results use; rename it")
    return table.append_column("row", pa.array(np.arange(table.num_rows), pa.int64()))


def to_column(array: np.ndarray) -> Any:
    """An array of samples (axis 0) as an Arrow column of nested lists, one sample per row."""
    import pyarrow as pa

    column = pa.array(np.ascontiguousarray(array).reshape(-1))
    for axis in range(array.ndim - 1, 0, -1):
        count = math.prod(array.shape[:axis])
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * array.shape[axis], pa.int32())
        column = pa.ListArray.from_arrays(offsets, column)
    return column


def from_column(column: Any, name: str) -> np.ndarray:
    """The inverse of ``to_column``: rows of equal-shaped nested lists as one array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    shape = [len(values)]
    kinds = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    while any(is_kind(values.type) for is_kind in kinds):
        lengths = pc.list_value_length(values)
        low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
        if values.null_count or low != high:
            raise InputError(
                f"column {name!r}: every row must hold a value of the same shape (no nulls, "
                "no ragged lists)"
            )
        shape.append(low or 0)
        values = values.flatten()
    if values.null_count:
        raise InputError(f"column {name!r} holds nulls; every row needs a value")
    return values.to_numpy(zero_copy_only=False).reshape(shape)


# -- the Ray pipeline ----------------------------------------------------------------------------


def _connect(ray: Any, address: str | None) -> bool:
    """Join the running Ray, or the cluster at ``address``, or start a local one; True when
    this call started it (and so shuts it down)."""
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    return True


def _default_threads(ray: Any, workers: int) -> int:
    """A node's CPUs shared among the workers (at most the largest node's), at least 1."""
    node_cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(1, min(max(node_cpus, default=1), sum(node_cpus) // workers))


def _pipeline(ray: Any, config: BatchConfig, source: Any, mode: str, threads: int) -> Any:
    """``source`` through a fixed pool of ``config.workers`` model actors (not started yet:
    Ray Data runs the pipeline as the results are read)."""
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if config.workers * threads > cpus:
        raise ConfigError(
            f"{config.workers} workers x {threads} threads need {config.workers * threads} CPUs; "
            f"the Ray cluster has {cpus}: lower --workers or --threads"
        )
    gpu = (config.device or "").startswith("cuda")
    load_args = {
        "backend": config.backend,
        "precision": config.precision,
        "device": "cuda" if gpu else config.device,  # Ray gives each actor its own GPU
        "threads": threads,
        "allow_failed": config.allow_failed,
    }
    return source.map_batches(
        Worker,
        fn_constructor_kwargs={
            "model": str(config.model),
            "load_args": load_args,
            "mode": mode,
            "top_k": config.top_k,
            "max_image_pixels": config.max_image_pixels,
        },
        batch_size=config.batch,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=config.workers),
        num_cpus=threads,
        num_gpus=1 if gpu else None,
    )


def _write(dataset: Any, out: Path, mode: str) -> tuple[int, int]:
    """Stream the result batches into one Parquet file, written atomically; (rows, errors)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = errors = 0
    with atomic_open(out) as handle:
        writer = None
        for batch in _batches(dataset):
            if writer is None:
                writer = pq.ParquetWriter(handle, batch.schema)
            writer.write_table(batch)
            rows += batch.num_rows
            if mode != "tensors":
                errors += int(pc.sum(pc.is_valid(batch.column("error"))).as_py() or 0)
        if writer is None:  # every input gives a row: Ray lost them
            raise EdgeportError("Ray Data returned no results; see the Ray logs")
        writer.close()
    return rows, errors


def _batches(dataset: Any) -> Any:
    """The dataset's result batches; an edgeport error raised in an actor is raised as itself."""
    quiet = _HideEdgeportErrors()
    loggers = [logging.getLogger(name) for name in _RAY_ERROR_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None)
    except Exception as exc:  # Ray wraps what an actor raised (RayTaskError.cause holds it)
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, EdgeportError):
            raise
        message = str(cause).split(_RAY_ADVICE, 1)[0]  # Ray appends its retry advice
        raise type(cause)(message) from exc
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


class _HideEdgeportErrors(logging.Filter):
    """Ray Data logs an actor's error with its whole trace (and, for an error it did not wrap,
    as a Ray bug to report) before raising it: drop those records when the error is edgeport's
    (the caller gets it, typed); any other error is logged as Ray logs it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return not isinstance(error, EdgeportError)


# -- the actor -----------------------------------------------------------------------------------


class Worker:
    """One Ray actor: loads the model once, then turns batches of inputs into result rows."""

    def __init__(
        self,
        model: str,
        load_args: dict[str, Any],
        mode: str,
        top_k: int,
        max_image_pixels: int | None = None,
    ) -> None:
        self.mode = mode
        self.top_k = top_k
        self.failed: EdgeportError | None = None  # raised with the first batch: Ray reports
        try:  # an error in a batch with its type, one in an actor's start as text only
            if max_image_pixels is not None:
                set_max_image_pixels(max_image_pixels)  # this actor's process
            self.model: Model = load(model, **load_args)
            self.schema = result_schema(self.model, mode)
        except EdgeportError as exc:
            self.failed = exc

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        if self.failed is not None:
            raise self.failed
        key = _KEYS[self.mode]
        if self.mode == "tensors":
            columns = self._tensors(batch)
        else:
            columns = self._images(batch.column("path").to_pylist())
        columns[key] = batch.column(key)
        names = self.schema.names
        return pa.Table.from_arrays([columns[n] for n in names], schema=self.schema)

    def _tensors(self, batch: Any) -> dict[str, Any]:
        given = [name for name in batch.column_names if name != _KEYS["tensors"]]
        missing = [s.name for s in self.model.inputs if s.name not in given]
        if missing:
            raise InputError(
                f"the inputs have columns {given}; the model's inputs are "
                f"{[s.name for s in self.model.inputs]} (missing {missing})"
            )
        feeds = {s.name: from_column(batch.column(s.name), s.name) for s in self.model.inputs}
        outputs = self.model.infer(feeds)  # checks every dtype and shape, converting nothing
        return {name: to_column(array) for name, array in outputs.items()}

    def _images(self, paths: list[str]) -> dict[str, Any]:
        import pyarrow as pa

        card = self._card()
        prepared: list[np.ndarray] = []
        errors: list[str | None] = []
        for path in paths:
            try:
                prepared.append(prepare_image(path, card))
                errors.append(None)
            except InputError as exc:  # not an image, corrupt, too large: this row's error
                errors.append(str(exc))
        where = _positions(errors)
        columns = self._classify(prepared) if self.mode == "classify" else self._raw(prepared)
        out = {
            name: _spread(column, where, self.schema.field(name).type)
            for name, column in columns.items()
        }
        out["error"] = pa.array(errors, pa.string())
        return out

    def _card(self) -> ModelCard:
        card = self.model.card
        if card is None or not card.is_image_model:
            raise ConfigError(f"{self.model.path} has no model card for images: give tensors")
        return card

    def _classify(self, prepared: list[np.ndarray]) -> dict[str, list[Any]]:
        predictions = self.model.predict(prepared, top_k=self.top_k) if prepared else []
        return {
            "labels": [p.labels for p in predictions],
            "indices": [p.indices for p in predictions],
            "scores": [p.probabilities for p in predictions],
        }

    def _raw(self, prepared: list[np.ndarray]) -> dict[str, Any]:
        names = [s.name for s in self.model.outputs]
        if not prepared:
            return {name: [] for name in names}
        outputs = self.model.run_images(normalize(np.stack(prepared), self._card()))
        return {name: to_column(array) for name, array in zip(names, outputs, strict=True)}


def result_schema(model: Model, mode: str) -> Any:
    """The Arrow schema of the result rows of ``mode`` for ``model``."""
    import pyarrow as pa

    if mode == "classify":
        fields = [
            pa.field("labels", pa.list_(pa.string())),
            pa.field("indices", pa.list_(pa.int64())),
            pa.field("scores", pa.list_(pa.float64())),
        ]
    else:
        fields = [pa.field(s.name, _column_type(s)) for s in model.outputs]
    key = pa.field(_KEYS[mode], pa.int64() if mode == "tensors" else pa.string())
    extra = [] if mode == "tensors" else [pa.field("error", pa.string())]
    names = [f.name for f in fields]
    clash = sorted({key.name, *(f.name for f in extra)} & set(names))
    if clash:
        raise ConfigError(f"the model has outputs named {clash}, which the result rows use")
    return pa.schema([key, *fields, *extra])


def _column_type(spec: TensorSpec) -> Any:
    import pyarrow as pa

    value = pa.from_numpy_dtype(numpy_dtype(spec.dtype))
    for _ in range(max(spec.rank - 1, 0)):
        value = pa.list_(value)
    return value


def _positions(errors: list[str | None]) -> list[int | None]:
    """For each input, its index among the decoded ones (None where it failed)."""
    count = 0
    where: list[int | None] = []
    for error in errors:
        where.append(None if error else count)
        count += error is None
    return where


def _spread(column: Any, where: list[int | None], kind: Any) -> Any:
    """The values of the decoded inputs placed at their rows; null rows where decoding failed."""
    import pyarrow as pa

    values = column if isinstance(column, pa.Array) else pa.array(column, kind)
    return values.cast(kind).take(pa.array(where, pa.int64()))
