"""The HTTP endpoints, on starlette requests: those of one model (``/v2/models/{name}``:
metadata, ready, infer, classify) and the server's own (``/v2``, ``/v2/health/*``, unknown
models). :mod:`edgeport.runtime.serve.app` puts them in Ray Serve deployments.

Every refusal is a JSON ``{"error": "..."}`` saying what was wrong: 400 for a bad request
(malformed JSON, unknown or missing input, wrong datatype or shape, batch out of range, NaN, an
image that does not decode), 404 for an unknown model or path, 405 for a wrong method, 413 for a
body over the size limit, 500 when the model itself fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from edgeport.runtime import __version__
from edgeport.runtime.errors import EdgeportError, InputError
from edgeport.runtime.model import Model
from edgeport.runtime.preprocess import decode_image
from edgeport.runtime.serve.metrics import ServeMetrics
from edgeport.runtime.serve.protocol import (
    HEADER_LENGTH,
    JSON_TYPE,
    VERSION,
    RequestError,
    decode_infer_request,
    decompress,
    encode_infer_response,
    model_metadata,
)
from edgeport.runtime.serve.settings import ModelSettings

log = logging.getLogger(__name__)

AsyncInfer = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]
ROUTES = {"": "metadata", "/ready": "ready", "/infer": "infer", "/classify": "classify"}
METHODS = {"metadata": "GET", "ready": "GET", "infer": "POST", "classify": "POST"}
DEFAULT_TOP_K = 5


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status_code=status, media_type=JSON_TYPE)


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def _refusal(exc: EdgeportError) -> Response:
    """The answer to a request that failed with an edgeport error."""
    if isinstance(exc, RequestError):
        return error_response(exc.status, str(exc))
    if isinstance(exc, InputError):
        return error_response(400, str(exc))
    log.warning("request failed: %s", exc)
    return error_response(500, str(exc))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, inflated if compressed; 413 past ``limit`` bytes."""
    length = request.headers.get("content-length", "")
    too_big = f"the body is above this server's limit of {limit:,} bytes (--max-body-mb)"
    if length.isdigit() and int(length) > limit:
        raise RequestError(f"{too_big}: Content-Length is {int(length):,}", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(too_big, 413)
        chunks.append(chunk)
    return decompress(b"".join(chunks), request.headers.get("content-encoding"), limit)


def model_route(path: str, name: str) -> str:
    """Which endpoint of model ``name`` a path names: metadata, ready, infer or classify."""
    rest = path[len(f"/v2/models/{name}") :].rstrip("/")
    if rest.startswith("/versions/"):
        version, _, tail = rest[len("/versions/") :].partition("/")
        if version != VERSION:
            raise RequestError(f"model {name!r} has version {VERSION} only, not {version!r}", 404)
        rest = f"/{tail}" if tail else ""
    endpoint = ROUTES.get(rest)
    if endpoint is None:
        raise RequestError(
            f"no endpoint {path}; model {name!r} has GET /v2/models/{name}, GET .../ready, "
            "POST .../infer and POST .../classify",
            404,
        )
    return endpoint


def _top_k(request: Request) -> int:
    text = request.query_params.get("top_k", str(DEFAULT_TOP_K))
    if not text.isdigit() or int(text) < 1:
        raise RequestError(f"top_k must be a positive integer, got {text!r}")
    return int(text)


class ModelEndpoint:
    """The endpoints of one loaded model. ``infer`` runs a validated feed (batched or not)."""

    def __init__(
        self,
        model: Model,
        settings: ModelSettings,
        infer: AsyncInfer,
        metrics: ServeMetrics | None = None,
    ) -> None:
        self.model = model
        self.name = settings.name
        self.limit = settings.max_body_bytes
        self.infer = infer
        self.metrics = metrics
        self.output_names = tuple(s.name for s in model.outputs)
        platform = "tensorrt_plan" if model.backend == "tensorrt" else "onnxruntime_onnx"
        self.metadata = model_metadata(self.name, platform, model.inputs, model.outputs)
        card = model.card
        self.classifier = bool(card and card.is_image_model and card.task == "classification")

    async def handle(self, request: Request) -> Response:
        """Answer one request; every failure becomes a JSON error with its status."""
        start = time.perf_counter()
        endpoint = "unknown"
        try:
            endpoint = model_route(request.url.path, self.name)
            if request.method != METHODS[endpoint]:
                raise RequestError(
                    f"{endpoint} takes {METHODS[endpoint]}, not {request.method}", 405
                )
            response = await self._dispatch(endpoint, request)
        except EdgeportError as exc:
            response = _refusal(exc)
        except Exception as exc:  # the model or the server failed: answered and logged
            log.exception("%s %s failed", request.method, request.url.path)
            response = error_response(500, f"internal error: {type(exc).__name__}: {exc}")
        if self.metrics is not None:
            self.metrics.request(endpoint, response.status_code, time.perf_counter() - start)
        return response

    async def _dispatch(self, endpoint: str, request: Request) -> Response:
        if endpoint == "metadata":
            return json_response(self.metadata)
        if endpoint == "ready":
            return json_response({"name": self.name, "ready": not self.model.closed})
        if endpoint == "infer":
            return await self._infer(request)
        return await self._classify(request)

    async def _infer(self, request: Request) -> Response:
        body = await read_body(request, self.limit)
        decoded = decode_infer_request(body, request.headers.get(HEADER_LENGTH), self.output_names)
        feeds = self.model.validate(decoded.feeds)
        outputs = await self.infer(feeds)
        content, headers = encode_infer_response(self.name, decoded, outputs)
        return Response(content, headers=headers)

    async def _classify(self, request: Request) -> Response:
        if not self.classifier:
            raise RequestError(
                f"model {self.name!r} is not an image classifier with a model card, so it "
                "cannot classify images; send tensors to /infer"
            )
        top_k = _top_k(request)
        body = await read_body(request, self.limit)
        images = await _uploads(request, body)
        predictions = await asyncio.to_thread(self._predict, images, top_k)
        return json_response({"model_name": self.name, "predictions": predictions})

    def _predict(self, images: Mapping[str, bytes], top_k: int) -> list[dict[str, Any]]:
        arrays = [decode_image(data, f"image {name!r}") for name, data in images.items()]
        return [p.to_dict() for p in self.model.predict(arrays, top_k=top_k)]


async def _uploads(request: Request, body: bytes) -> dict[str, bytes]:
    """The images of a classify request by name: the raw body, or each file of a
    multipart/form-data body."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        if not body:
            raise RequestError("the body is empty: send the image's bytes (or multipart files)")
        return {"body": body}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, receive).form()
    except (ValueError, AssertionError) as exc:  # python-multipart's and starlette's errors
        raise RequestError(f"malformed multipart body: {exc}") from exc
    images = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            images[f"{key}:{value.filename}"] = await value.read()
    if not images:
        raise RequestError("the multipart body has no file: attach each image as a file")
    return images


class RootEndpoint:
    """``/v2`` (server metadata), ``/v2/health/live``, ``/v2/health/ready`` and every path no
    model answers (404). ``models`` tells which models are served and whether each is ready."""

    def __init__(self, models: Callable[[], Awaitable[dict[str, bool]]]) -> None:
        self.models = models

    async def handle(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if path.startswith("/v2/models/"):
            name, served = path.split("/")[3], sorted(await self.models())
            return error_response(404, f"unknown model {name!r}; this server serves {served}")
        if request.method != "GET":
            return error_response(405, f"{path or '/'} takes GET, not {request.method}")
        if path == "/v2/health/live":
            return json_response({"live": True})
        models = await self.models()
        if path == "/v2/health/ready":
            ready = bool(models) and all(models.values())
            return json_response({"ready": ready, "models": models}, 200 if ready else 503)
        if path == "/v2":
            return json_response(
                {
                    "name": "edgeport",
                    "version": __version__,
                    "extensions": ["binary_tensor_data", "classify"],
                    "models": sorted(models),
                }
            )
        return error_response(404, f"no endpoint {path or '/'}; the endpoints are under /v2")
