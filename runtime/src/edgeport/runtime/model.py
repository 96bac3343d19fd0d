"""An opened model: ``Model.infer`` any inputs; ``Model.run`` and ``Model.predict`` for image
classifiers; ``Model.detect`` and ``Model.segment`` for detectors and segmenters. ``load``
(:mod:`edgeport.runtime.loader`) makes one.

Input policy: numpy arrays of exactly the dtypes the model declares; nothing is converted
silently, and the error says which cast is needed. ``Model.run`` is the image-classifier
convenience (one float32 NCHW batch in, the one output out as float32), and the only place an
fp16 model's input is converted from float32, as an image batch always is float32.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from edgeport.runtime.backends.base import Backend
from edgeport.runtime.backends.registry import Attempt, rule_text
from edgeport.runtime.bundle import Artifact, BatchRange, leading_range
from edgeport.runtime.card import ONNX_METADATA_KEY, ModelCard
from edgeport.runtime.chunks import run_in_chunks
from edgeport.runtime.errors import (
    ConfigError,
    InputError,
    ModelLoadError,
    NonFiniteOutputWarning,
)
from edgeport.runtime.preprocess import ImageLike, preprocess
from edgeport.runtime.specs import FeedCheck, TensorSpec, nonfinite_outputs, plain_array, range_text
from edgeport.runtime.tasks import Detections, detections, label_maps, prepare_images

_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)


@dataclass(frozen=True)
class Prediction:
    """The top-k classes for one image, most probable first."""

    labels: list[str]
    indices: list[int]
    probabilities: list[float]

    @property
    def top1(self) -> str:
        """The most probable class name."""
        return self.labels[0]

    @property
    def confidence(self) -> float:
        """The probability of :attr:`top1`."""
        return self.probabilities[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "indices": list(self.indices),
            "probabilities": list(self.probabilities),
        }


class _ImageFeedCheck(FeedCheck):
    """The feed check of a model whose one input is an NCHW image batch: the same checks, with
    messages in the terms of images (batch, channels, height x width)."""

    def _expected(self) -> str:
        dims = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.specs[0].shape[1:])
        return f"(N, C, H, W) = (N, {dims})"

    def _raise_array(self, check: Any, array: Any) -> None:
        spec = check.spec
        if not isinstance(array, np.ndarray):
            raise InputError(
                f"Model.run expects a numpy {spec.dtype} array of shape {self._expected()}, got "
                f"{type(array).__name__}; raw images go through Model.predict"
            )
        if array.dtype != check.dtype:
            raise InputError(
                f"input {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype} (shape "
                f"{array.shape}); Model.run does not convert: use batch.astype(np.{spec.dtype}), "
                "or give raw images to Model.predict"
            )
        hint = "; add a batch axis with batch[None]" if array.ndim == 3 else ""
        raise InputError(
            f"input {spec.name!r}: expected a 4-D batch {self._expected()}, got {array.ndim}-D "
            f"shape {array.shape}{hint}"
        )

    def _raise_dim(self, check: Any, array: np.ndarray, axis: int, low: int, high: int) -> None:
        name, shape = check.spec.name, array.shape
        if axis == 0:
            raise InputError(
                f"input {name!r}: batch size {shape[0]} is outside this model's range "
                f"{range_text(low, high)} (shape {shape}); "
                + ("split the batch" if shape[0] > high else "pad the batch")
            )
        if axis == 1:
            raise InputError(
                f"input {name!r}: expected {low} channels (axis 1 of {self._expected()}), got "
                f"{shape[1]} in shape {shape}"
            )
        height, width = (check.spec.shape[2], check.spec.shape[3])
        raise InputError(
            f"input {name!r}: expected height x width {height}x{width}, got {shape[2]}x{shape[3]} "
            f"(shape {shape}); resize to the card's input size (Model.predict does)"
        )


def _feed_check(inputs: Sequence[TensorSpec]) -> FeedCheck:
    image_like = len(inputs) == 1 and inputs[0].rank == 4 and inputs[0].is_float
    return (_ImageFeedCheck if image_like else FeedCheck)(inputs)


class Model:
    """An opened model: ``infer`` (named arrays in, named arrays out) for any model, ``run``
    (one array in, one out) and ``predict`` (images in, labels out) for image classifiers.
    Safe to call from several threads at once. Close it (or use ``with``) to free GPU memory."""

    def __init__(
        self,
        backend: Backend,
        *,
        path: Path,
        card: ModelCard | None,
        artifact: Artifact | None,
        precision: str,
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        attempts: list[Attempt],
        notes: list[str] | None = None,
        check_outputs: bool = True,
    ) -> None:
        self._backend: Backend | None = backend
        self._backend_name = backend.name
        self._describe = backend.describe()
        self.path = path
        self.card = card
        self.artifact = artifact
        self.precision = precision
        self.inputs = inputs
        self.outputs = outputs
        self.attempts = list(attempts)
        self.notes = list(notes or [])
        self._feeds = _feed_check(inputs)
        self._output_names = tuple(s.name for s in outputs)
        self._one_input = self._feeds.checks[0] if len(inputs) == 1 else None  # infer's fast path
        # Model.run: one input and one output; float32 in and out, even for an fp16 file
        self._single = self._one_input if len(outputs) == 1 else None
        self._run_in_f16 = len(inputs) == 1 and inputs[0].dtype == "float16"
        self._run_out_f16 = len(outputs) == 1 and outputs[0].dtype == "float16"
        self.check_outputs = check_outputs  # warn on NaN/Inf outputs
        self.choice_basis = ""  # what decided the backend: a tuning record, or the rule

    # -- properties -----------------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """The backend running the model: tensorrt, onnxruntime-cuda, onnxruntime-cpu, ..."""
        return self._backend_name

    @property
    def closed(self) -> bool:
        return self._backend is None

    @property
    def num_classes(self) -> int | None:
        return self.card.num_classes if self.card and self.card.num_classes else None

    @property
    def input_name(self) -> str:
        return self.inputs[0].name

    @property
    def output_name(self) -> str:
        return self.outputs[0].name

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The first input's shape without its leading (batch) axis; None where dynamic."""
        return tuple(d if isinstance(d, int) else None for d in self.inputs[0].shape[1:])

    @property
    def batch_range(self) -> BatchRange:
        """The range of the first input's leading (batch) axis."""
        return leading_range(self.inputs[0])

    # -- running --------------------------------------------------------------------------------

    def _live(self) -> Backend:
        backend = self._backend
        if backend is None:
            raise ModelLoadError(f"this model ({self.path}) is closed; load it again")
        return backend

    def infer(self, feeds: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """The outputs by name (in the model's order) for inputs given by name. A model with
        one input also takes the array itself. Every input is validated first (:mod:`specs`)."""
        backend = self._live()
        one = self._one_input
        if one is not None and isinstance(feeds, np.ndarray):  # np.memmap and other subclasses
            arrays = [self._feeds.one(one, feeds)]
        elif one is not None and type(feeds) is dict and len(feeds) == 1 and one.name in feeds:
            arrays = [self._feeds.one(one, feeds[one.name])]  # the common case, checked alike
        else:
            arrays = self._feeds(feeds)  # type: ignore[arg-type]
        outputs = backend.infer(arrays)
        if self.check_outputs:
            self._warn_nonfinite(outputs)
        return dict(zip(self._output_names, outputs, strict=True))

    def validate(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs checked exactly as :meth:`infer` checks them (raising ``InputError``),
        without running the model: for callers that gather inputs before one call, such as
        ``edgeport serve``'s dynamic batching."""
        arrays = self._feeds(feeds)
        return dict(zip((s.name for s in self.inputs), arrays, strict=True))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The one output (float32) for the one input: for an image classifier, logits of shape
        (N, classes) for a preprocessed float32 (N, C, H, W) batch."""
        backend = self._live()
        check = self._single
        if check is None:
            raise InputError(
                f"Model.run takes models with one input and one output; {self.path.name} has "
                f"inputs {[s.name for s in self.inputs]} and outputs "
                f"{list(self._output_names)}: use Model.infer"
            )
        if self._run_in_f16 and isinstance(batch, np.ndarray) and batch.dtype == _F32:
            batch = plain_array(batch).astype(_F16)
        outputs = backend.infer([self._feeds.one(check, batch)])
        if self.check_outputs:
            self._warn_nonfinite(outputs)
        return outputs[0].astype(_F32) if self._run_out_f16 else outputs[0]

    def _warn_nonfinite(self, outputs: Sequence[np.ndarray]) -> None:
        found = nonfinite_outputs(self._output_names, outputs)
        if found:
            warnings.warn(
                f"{self.path.name} ({self.backend}, {self.precision}) returned non-finite "
                f"values from finite inputs: {'; '.join(found)}. An fp16 artifact may overflow; "
                "check it with edgeport check (load(..., check_outputs=False) silences this)",
                NonFiniteOutputWarning,
                stacklevel=3,
            )

    def predict(
        self, images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike], top_k: int = 5
    ) -> list[Prediction]:
        """Class names and probabilities for raw images (paths, PIL images, uint8 HWC arrays;
        grey, RGB or RGBA), resized and normalised as the model card says."""
        card = self._image_card("predict")
        if card.task != "classification":
            raise ConfigError(
                f"{self.path} is a {card.task} model; Model.predict classifies images"
                + (": use Model.detect" if card.task == "detection" else "")
                + (": use Model.segment" if card.task == "segmentation" else "")
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        logits = self.run_images(preprocess(images, card))[0]
        shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probabilities = exp / exp.sum(axis=1, keepdims=True)
        k = min(top_k, probabilities.shape[1])
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [
            Prediction(
                labels=[card.class_names[i] for i in row],
                indices=[int(i) for i in row],
                probabilities=[float(p) for p in probs[row]],
            )
            for row, probs in zip(order, probabilities, strict=True)
        ]

    def _image_card(self, what: str) -> ModelCard:
        card = self.card
        if card is None or not card.is_image_model:
            raise ModelLoadError(
                f"{self.path} has no model card for images (no bundle manifest and no "
                f"{ONNX_METADATA_KEY!r} ONNX metadata), so {what} cannot preprocess images or "
                "name classes; use Model.run or Model.infer on preprocessed arrays, or load the "
                "bundle"
            )
        if len(self.inputs) != 1:
            raise ConfigError(
                f"Model.{what} feeds images to models with one input; {self.path.name} has "
                f"{[s.name for s in self.inputs]}: use Model.infer"
            )
        return card

    def run_images(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output for any number of preprocessed images: split above the batch range's
        max, padded below its min."""
        feeds = {self.inputs[0].name: batch.astype(self.inputs[0].dtype, copy=False)}
        low, high = self.batch_range.min, self.batch_range.max
        return list(run_in_chunks(self.infer, feeds, high, low).values())

    # -- description and lifetime ---------------------------------------------------------------

    def explain(self) -> str:
        """Which backend and artifact were chosen, with what settings, and why the others not,
        and the CPU's precision capabilities (its flags and OpenVINO's reading)."""
        from edgeport.runtime.cpu_features import describe_line

        target = self.artifact.name if self.artifact else self.path.name
        lines = [
            f"model: {self.path}",
            f"chosen: {self.backend}, {target} ({self.precision})",
        ]
        lines += [f"  {key}: {value}" for key, value in self.describe().items()]
        lines += [f"input {spec.describe()}" for spec in self.inputs]
        lines += [f"output {spec.describe()}" for spec in self.outputs]
        lines.append("candidates, in the order considered:")
        lines += [f"  - {a}" for a in self.attempts]
        lines.append(f"choice: {self.choice_basis or rule_text()}")
        lines.append(f"cpu precisions: {describe_line()}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        """The backend's settings (library, providers, threads, device, CUDA graph)."""
        backend = self._backend
        if backend is not None:
            self._describe = backend.describe()  # live: e.g. a CUDA graph that was given up
        return dict(self._describe)

    def close(self) -> None:
        """Free the session or engine and its GPU memory; later calls raise. Idempotent."""
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        target = self.artifact.name if self.artifact else self.path.name
        return f"<Model {target} on {self.backend} ({self.precision}), {state}>"

    # -- task helpers (numpy post-processing, :mod:`edgeport.runtime.tasks`) -------------------

    def detect(
        self,
        images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike],
        *,
        score_threshold: float | None = None,
    ) -> list[Detections]:
        """Objects in raw images (paths, PIL images, uint8 HWC arrays): per image boxes in its
        own pixels, scores, labels and class names, with the card's SSD post-processing
        (``score_threshold`` replaces its score threshold)."""
        card = self._image_card("detect")
        batch, sizes = prepare_images(images, card)
        outputs = dict(zip(self._output_names, self.run_images(batch), strict=True))
        return detections(outputs, card, sizes, score_threshold)

    def segment(
        self, images: ImageLike | Sequence[ImageLike] | Iterable[ImageLike]
    ) -> list[np.ndarray]:
        """Per raw image an int64 [H, W] map of class indices (``card.class_names``) at the
        image's own size."""
        card = self._image_card("segment")
        batch, sizes = prepare_images(images, card)
        outputs = dict(zip(self._output_names, self.run_images(batch), strict=True))
        return label_maps(outputs, card, sizes)
