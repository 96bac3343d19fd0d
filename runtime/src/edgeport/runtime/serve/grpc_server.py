"""The gRPC front end of the one-process server: the Open Inference Protocol's
``inference.GRPCInferenceService`` (``ServerLive``, ``ServerReady``, ``ModelReady``,
``ServerMetadata``, ``ModelMetadata``, ``ModelInfer`` with raw or typed contents) and Triton's
``ModelConfig``, on ``grpc.aio`` in the server's event loop.

The messages and the service come from the code generated from Triton's ``grpc_service.proto``
that the ``tritonclient`` wheel ships (BSD-3-Clause): it holds the KServe v2 service with the
same messages and field numbers, plus ``ModelConfig``, which perf_analyzer asks first. Using that
generated code rather than a second copy of it matters: protobuf refuses two files defining the
same ``inference.*`` messages in one process, so a server with its own copy could not share a
process with Triton's client. RPCs edgeport does not implement answer ``UNIMPLEMENTED``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from edgeport.runtime.serve.endpoints import (
    REFUSED,
    ModelEndpoint,
    internal_error,
    refusal,
    server_metadata,
)
from edgeport.runtime.serve.protocol import (
    STATUS_GRPC,
    VERSION,
    decode_grpc_infer,
    encode_grpc_infer,
)

log = logging.getLogger(__name__)


def _status(status: int) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, STATUS_GRPC.get(status, "INTERNAL"))


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers the protocol's RPCs from the endpoints of the models (by name)."""

    def __init__(self, endpoints: Mapping[str, ModelEndpoint]) -> None:
        self.endpoints = endpoints
        self._configs = {
            name: json_format.ParseDict(e.config, model_config_pb2.ModelConfig())
            for name, e in endpoints.items()
        }

    async def _endpoint(self, name: str, version: str, context: Any) -> ModelEndpoint:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"unknown model {name!r}; this server serves {sorted(self.endpoints)}",
            )
        if version not in ("", VERSION):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"model {name!r} has version {VERSION} only"
            )
        return endpoint  # type: ignore[return-value]

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        ready = bool(self.endpoints) and all(e.ready for e in self.endpoints.values())
        return service_pb2.ServerReadyResponse(ready=ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        endpoint = await self._endpoint(request.name, request.version, context)
        return service_pb2.ModelReadyResponse(ready=endpoint.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        meta = server_metadata(sorted(self.endpoints))
        return service_pb2.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        endpoint = await self._endpoint(request.name, request.version, context)
        meta = endpoint.metadata
        response = service_pb2.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for key, tensors in (("inputs", response.inputs), ("outputs", response.outputs)):
            for tensor in meta[key]:
                tensors.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        return response

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        endpoint = await self._endpoint(request.name, request.version, context)
        return service_pb2.ModelConfigResponse(config=self._configs[endpoint.name])

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        endpoint = await self._endpoint(request.model_name, request.model_version, context)
        start = time.perf_counter()
        status, message = 200, ""
        try:
            decoded = decode_grpc_infer(request, endpoint.output_names)
            outputs = await endpoint.run(decoded)
            response = encode_grpc_infer(
                service_pb2.ModelInferResponse(), endpoint.name, decoded, outputs
            )
        except REFUSED as exc:
            status, message = refusal(exc)
        except Exception as exc:  # the model or the server failed: answered and logged
            log.exception("gRPC ModelInfer of %s failed", endpoint.name)
            status, message = internal_error(exc)
        if endpoint.metrics is not None:
            endpoint.metrics.request("infer", status, time.perf_counter() - start, "grpc")
        if status != 200:
            await context.abort(_status(status), message)
        return response


def make_server(endpoints: Mapping[str, ModelEndpoint], max_message: int) -> Any:
    """A ``grpc.aio`` server with the service added (not yet bound or started)."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(endpoints), server
    )
    return server
