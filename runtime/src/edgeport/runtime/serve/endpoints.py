"""The endpoints of ``edgeport serve``, free of any web framework: those of one model
(``/v2/models/{name}``: metadata, config, ready, infer, classify) and the server's own (``/v2``,
``/v2/health/*``, unknown models). The one-process server (aiohttp, :mod:`http_server`) and the
Ray Serve replicas (Starlette, :mod:`app`) hand them a request's method, path, query, headers and
a way to read its body; the gRPC front end (:mod:`grpc_server`) calls :meth:`ModelEndpoint.run`.

Every refusal is a JSON ``{"error": "..."}`` saying what was wrong: 400 for a bad request
(malformed JSON, unknown or missing input, wrong datatype or shape, batch out of range, NaN, an
image that does not decode), 404 for an unknown model or path, 405 for a wrong method, 413 for a
body over the size limit or over what the model's inputs can need, 503 when the model's queue is
full, 500 when the model itself fails.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeport.runtime import __version__
from edgeport.runtime.backends.registry import backend_spec
from edgeport.runtime.errors import EdgeportError, InputError
from edgeport.runtime.loader import load
from edgeport.runtime.model import Model
from edgeport.runtime.preprocess import decode_image
from edgeport.runtime.serve.batching import Batcher, Overloaded, can_merge
from edgeport.runtime.serve.metrics import ServeMetrics
from edgeport.runtime.serve.model_config import PLATFORMS, model_config
from edgeport.runtime.serve.protocol import (
    HEADER_LENGTH,
    JSON_TYPE,
    LARGE_JSON,
    VERSION,
    InferRequest,
    RequestError,
    decode_infer_request,
    decompress,
    encode_infer_response,
    model_metadata,
    tensor_body_limit,
)
from edgeport.runtime.serve.settings import ModelSettings

log = logging.getLogger(__name__)

BodyReader = Callable[[int], Awaitable[bytes]]  # reads the body, 413 past the given bytes
ROUTES = {
    "": "metadata",
    "/config": "config",
    "/ready": "ready",
    "/infer": "infer",
    "/classify": "classify",
}
METHODS = {"metadata": "GET", "config": "GET", "ready": "GET", "infer": "POST", "classify": "POST"}
EXTENSIONS = ["binary_tensor_data", "model_configuration", "classify"]
DEFAULT_TOP_K = 5


@dataclass(frozen=True)
class Reply:
    """An answer: status, body, its content type and any other headers."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode())


def error_reply(status: int, message: str) -> Reply:
    return json_reply({"error": message}, status)


REFUSED = (EdgeportError, Overloaded)  # failures answered with their own status and message


def refusal(exc: EdgeportError | Overloaded) -> tuple[int, str]:
    """The status and message of a request that failed with ``exc``."""
    if isinstance(exc, RequestError):
        return exc.status, str(exc)
    if isinstance(exc, InputError):
        return 400, str(exc)
    if isinstance(exc, Overloaded):
        return 503, f"the server is at capacity: {exc}"
    log.warning("request failed: %s", exc)
    return 500, str(exc)


def internal_error(exc: Exception) -> tuple[int, str]:
    """500 for a failure nobody foresaw (the caller logs its traceback)."""
    return 500, f"internal error: {type(exc).__name__}: {exc}"


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A body from its chunks, refused with 413 once it passes ``limit`` bytes."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RequestError(f"the body is above {limit:,} bytes", 413)
        parts.append(chunk)
    return b"".join(parts)


def open_endpoint(settings: ModelSettings, metrics: ServeMetrics | None) -> ModelEndpoint:
    """Load the model ``settings`` names and make its endpoints."""
    model = load(
        settings.path,
        backend=settings.backend,
        precision=settings.precision,
        device=settings.device,
        threads=settings.threads,
        allow_failed=settings.allow_failed,
    )
    endpoint = ModelEndpoint(model, settings, metrics)
    batching = f"up to {endpoint.batch_limit} samples" if endpoint.batch_limit > 1 else "off"
    log.info("%s: %s on %s, batching %s", settings.name, model.path, model.backend, batching)
    return endpoint


def model_route(path: str, name: str) -> str:
    """Which endpoint of model ``name`` a path names: metadata, config, ready, infer or
    classify."""
    rest = path[len(f"/v2/models/{name}") :].rstrip("/")
    if rest.startswith("/versions/"):
        version, _, tail = rest[len("/versions/") :].partition("/")
        if version != VERSION:
            raise RequestError(f"model {name!r} has version {VERSION} only, not {version!r}", 404)
        rest = f"/{tail}" if tail else ""
    endpoint = ROUTES.get(rest)
    if endpoint is None:
        raise RequestError(
            f"no endpoint {path}; model {name!r} has GET /v2/models/{name}, GET .../config, "
            "GET .../ready, POST .../infer and POST .../classify",
            404,
        )
    return endpoint


def _top_k(query: Mapping[str, str]) -> int:
    text = query.get("top_k", str(DEFAULT_TOP_K))
    if not text.isdigit() or int(text) < 1:
        raise RequestError(f"top_k must be a positive integer, got {text!r}")
    return int(text)


def _model_format(model: Model) -> str:
    """The format Triton's configuration names: the backend's main one (ONNX for the formats
    Triton has no platform for)."""
    fmt = backend_spec(model.backend).format
    return fmt if fmt in PLATFORMS else "onnx"


class ModelEndpoint:
    """The endpoints of one loaded model; its infer requests go through a :class:`Batcher`.
    Bodies above :data:`LARGE_JSON` bytes are inflated and decoded in ``decoder``, a thread of
    their own, so one large request never holds the event loop."""

    def __init__(
        self, model: Model, settings: ModelSettings, metrics: ServeMetrics | None = None
    ) -> None:
        self.model = model
        self.name = settings.name
        self.metrics = metrics
        self.output_names = tuple(s.name for s in model.outputs)
        limit = min(settings.max_batch, model.batch_range.max)
        merging = limit > 1 and can_merge(model.inputs, model.outputs)
        self.batch_limit = limit if merging else 1
        self.batcher = Batcher(
            model.infer,
            limit=self.batch_limit,
            wait_s=settings.batch_wait_ms / 1000.0,
            max_queued=settings.max_queued_requests,
            instances=settings.instances,
            on_call=metrics.call if metrics is not None else None,
        )
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix=f"edgeport-decode-{self.name}")
        self.tensor_limit = tensor_body_limit(model.inputs, model.batch_range.max)
        self.max_body = settings.max_body_bytes
        self.body_limit = min(self.max_body, self.tensor_limit or self.max_body)
        model_format = _model_format(model)
        self.platform = PLATFORMS[model_format][0]
        self.metadata = model_metadata(self.name, self.platform, model.inputs, model.outputs)
        self.config = model_config(
            self.name,
            model_format,
            model.inputs,
            model.outputs,
            max_batch=model.batch_range.max,
            preferred_batches=(self.batch_limit,),
            queue_delay_us=int(settings.batch_wait_ms * 1000) if merging else None,
            instances=settings.instances,
        )
        card = model.card
        self.classifier = bool(card and card.is_image_model and card.task == "classification")
        self._metadata_body = json.dumps(self.metadata).encode()
        self._config_body = json.dumps(self.config).encode()

    @property
    def ready(self) -> bool:
        return not self.model.closed

    async def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        read_body: BodyReader,
    ) -> Reply:
        """Answer one HTTP request; every failure becomes a JSON error with its status."""
        start = time.perf_counter()
        endpoint = "unknown"
        try:
            endpoint = model_route(path, self.name)
            if method != METHODS[endpoint]:
                raise RequestError(f"{endpoint} takes {METHODS[endpoint]}, not {method}", 405)
            reply = await self._dispatch(endpoint, query, headers, read_body)
        except REFUSED as exc:
            reply = error_reply(*refusal(exc))
        except Exception as exc:  # the model or the server failed: answered and logged
            log.exception("%s %s failed", method, path)
            reply = error_reply(*internal_error(exc))
        if self.metrics is not None:
            self.metrics.request(endpoint, reply.status, time.perf_counter() - start)
        return reply

    async def _dispatch(
        self,
        endpoint: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        read_body: BodyReader,
    ) -> Reply:
        if endpoint == "infer":
            return await self._infer(headers, read_body)
        if endpoint == "metadata":
            return Reply(200, self._metadata_body)
        if endpoint == "config":
            return Reply(200, self._config_body)
        if endpoint == "ready":
            return json_reply({"name": self.name, "ready": self.ready})
        return await self._classify(query, headers, read_body)

    def _too_big(self, size: int | None) -> RequestError:
        """413 for a body of ``size`` bytes (None: more than the limit, read in chunks)."""
        body = f"the body is {size:,} bytes" if size else "the body is larger"
        if self.tensor_limit is not None and self.tensor_limit < self.max_body:
            return RequestError(
                f"{body}, above the {self.tensor_limit:,} bytes that model "
                f"{self.name!r} can need for its inputs at batch {self.model.batch_range.max} "
                "even as JSON: send fewer samples, or binary tensor data",
                413,
            )
        return RequestError(
            f"{body}, above this server's limit of {self.max_body:,} bytes (--max-body-mb)", 413
        )

    async def read(self, headers: Mapping[str, str], read_body: BodyReader) -> bytes:
        """The request's body, refused with 413 past :attr:`body_limit` (by its
        Content-Length before a byte is read, when it has one)."""
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.body_limit:
            raise self._too_big(int(length))
        try:
            return await read_body(self.body_limit)
        except RequestError as exc:
            if exc.status == 413:
                raise self._too_big(None) from None
            raise

    async def _decode(self, body: bytes, headers: Mapping[str, str]) -> InferRequest:
        encoding, length = headers.get("content-encoding"), headers.get(HEADER_LENGTH)

        def decode() -> InferRequest:
            inflated = decompress(body, encoding, self.body_limit)
            return decode_infer_request(inflated, length, self.output_names)

        if len(body) <= LARGE_JSON and not encoding:
            return decode()
        return await asyncio.get_running_loop().run_in_executor(self.decoder, decode)

    async def run(self, request: InferRequest) -> dict[str, np.ndarray]:
        """The outputs of a decoded request: its feeds validated, then batched."""
        return await self.batcher(self.model.validate(request.feeds))

    async def _infer(self, headers: Mapping[str, str], read_body: BodyReader) -> Reply:
        decoded = await self._decode(await self.read(headers, read_body), headers)
        outputs = await self.run(decoded)
        content, reply_headers = encode_infer_response(self.name, decoded, outputs)
        content_type = reply_headers.pop("content-type")
        return Reply(200, content, content_type, reply_headers)

    async def _classify(
        self, query: Mapping[str, str], headers: Mapping[str, str], read_body: BodyReader
    ) -> Reply:
        if not self.classifier:
            raise RequestError(
                f"model {self.name!r} is not an image classifier with a model card, so it "
                "cannot classify images; send tensors to /infer"
            )
        top_k = _top_k(query)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise self._too_big(int(length))
        body = await read_body(self.max_body)
        content_type = headers.get("content-type", "")
        loop = asyncio.get_running_loop()
        images = await loop.run_in_executor(self.decoder, _uploads, body, content_type)
        predictions = await loop.run_in_executor(self.batcher.pool, self._predict, images, top_k)
        return json_reply({"model_name": self.name, "predictions": predictions})

    def _predict(self, images: Mapping[str, bytes], top_k: int) -> list[dict[str, Any]]:
        arrays = [decode_image(data, f"image {name!r}") for name, data in images.items()]
        return [p.to_dict() for p in self.model.predict(arrays, top_k=top_k)]

    def close(self) -> None:
        """Finish the calls under way, then stop the threads and close the model."""
        self.batcher.close()
        self.decoder.shutdown(wait=True)
        self.model.close()


def _uploads(body: bytes, content_type: str) -> dict[str, bytes]:
    """The images of a classify request by name: the raw body, or each file of a
    multipart/form-data body."""
    if not content_type.startswith("multipart/form-data"):
        if not body:
            raise RequestError("the body is empty: send the image's bytes (or multipart files)")
        return {"body": body}
    from python_multipart import parse_form
    from python_multipart.exceptions import FormParserError

    images: dict[str, bytes] = {}

    def on_file(upload: Any) -> None:
        upload.file_object.seek(0)
        name = f"{(upload.field_name or b'').decode()}:{(upload.file_name or b'').decode()}"
        images[name] = upload.file_object.read()

    headers = {"Content-Type": content_type.encode(), "Content-Length": str(len(body)).encode()}
    try:
        parse_form(headers, io.BytesIO(body), lambda _field: None, on_file)
    except (FormParserError, ValueError) as exc:
        raise RequestError(f"malformed multipart body: {exc}") from exc
    if not images:
        raise RequestError("the multipart body has no file: attach each image as a file")
    return images


class RootEndpoint:
    """``/v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready`` and every path no
    model answers (404). ``models`` tells which models are served and whether each is ready."""

    def __init__(self, models: Callable[[], Awaitable[dict[str, bool]]]) -> None:
        self.models = models

    async def handle(self, method: str, path: str) -> Reply:
        path = path.rstrip("/")
        if path.startswith("/v2/models/"):
            name, served = path.split("/")[3], sorted(await self.models())
            return error_reply(404, f"unknown model {name!r}; this server serves {served}")
        if method != "GET":
            return error_reply(405, f"{path or '/'} takes GET, not {method}")
        if path == "/v2/health/live":
            return json_reply({"live": True})
        models = await self.models()
        if path == "/v2/health/ready":
            ready = bool(models) and all(models.values())
            return json_reply({"ready": ready, "models": models}, 200 if ready else 503)
        if path == "/v2":
            return json_reply(server_metadata(sorted(models)))
        return error_reply(404, f"no endpoint {path or '/'}; the endpoints are under /v2")


def server_metadata(models: list[str]) -> dict[str, Any]:
    """The body of ``GET /v2`` (and gRPC ``ServerMetadata``, with the models left out)."""
    return {"name": "edgeport", "version": __version__, "extensions": EXTENSIONS, "models": models}
