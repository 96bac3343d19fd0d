"""The peers ``serve_matrix.py`` measures edgeport's server against, each run as its own process:

    python benchmarks/serve_peers.py minimal MODEL.onnx --name NAME --port P --config C.json
    python benchmarks/serve_peers.py kserve MODEL.onnx --name NAME --port P --grpc-port G \\
        --config C.json --config-pb C.pb

- ``minimal``: the Python limit, an aiohttp server in about 80 lines that answers what
  perf_analyzer and the load-test client ask (health, metadata, config, infer with binary or
  JSON tensors) and runs ONNX Runtime on the event loop: no validation, batching or metrics.
- ``kserve``: KServe's Python ``ModelServer`` (FastAPI on uvicorn, and gRPC) with a
  ``kserve.Model`` running the same ONNX Runtime session. perf_analyzer first asks Triton's model
  configuration, which KServe does not answer, so the benchmark adds it: an HTTP route with the
  JSON of ``--config`` and a gRPC ``ModelConfig`` method answering the serialized
  ``ModelConfigResponse`` of ``--config-pb`` (KServe's own generated protocol code and Triton's
  cannot be loaded in one process, so the message is made by the benchmark beforehand).

Both use ONNX Runtime with ``--threads`` intra-op threads (2), as the edgeport server does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

DATATYPES = {"float32": "FP32", "int64": "INT64", "float16": "FP16", "bool": "BOOL"}
NUMPY = {v: k for k, v in DATATYPES.items()}
LENGTH = "Inference-Header-Content-Length"


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def model_metadata(sess: Any, name: str) -> dict[str, Any]:
    """The protocol's model metadata of a float32 session."""

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": t.name,
                "datatype": "FP32",
                "shape": [d if isinstance(d, int) else -1 for d in t.shape],
            }
            for t in specs
        ]

    return {
        "name": name,
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": tensors(sess.get_inputs()),
        "outputs": tensors(sess.get_outputs()),
    }


def minimal(args: argparse.Namespace) -> None:
    from aiohttp import web

    sess = session(args.model, args.threads)
    metadata = json.dumps(model_metadata(sess, args.name)).encode()
    config = args.config.read_bytes()

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        size = int(request.headers.get(LENGTH, len(body)))
        header, offset, feeds = json.loads(body[:size]), size, {}
        for t in header["inputs"]:
            dtype = np.dtype(NUMPY[t["datatype"]])
            if "data" in t:
                feeds[t["name"]] = np.asarray(t["data"], dtype).reshape(t["shape"])
                continue
            n = t["parameters"]["binary_data_size"]
            raw = np.frombuffer(body, dtype, count=n // dtype.itemsize, offset=offset)
            feeds[t["name"]], offset = raw.reshape(t["shape"]), offset + n
        results = sess.run(None, feeds)
        names = [o.name for o in sess.get_outputs()]
        wanted = {o["name"]: o.get("parameters", {}) for o in header.get("outputs", [])}
        binary = header.get("parameters", {}).get("binary_data_output", False)
        entries, blobs = [], []
        for name, array in zip(names, results, strict=True):
            if wanted and name not in wanted:
                continue
            entry = {
                "name": name,
                "datatype": DATATYPES[array.dtype.name],
                "shape": list(array.shape),
            }
            if wanted.get(name, {}).get("binary_data", binary):
                blob = array.tobytes()
                entry["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                entry["data"] = array.ravel().tolist()
            entries.append(entry)
        text = json.dumps(
            {"model_name": args.name, "model_version": "1", "outputs": entries}
        ).encode()
        if not blobs:
            return web.Response(body=text, content_type="application/json")
        headers = {LENGTH: str(len(text)), "Content-Type": "application/octet-stream"}
        return web.Response(body=b"".join([text, *blobs]), headers=headers)

    def ok(body: bytes) -> Any:
        async def handler(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        return handler

    app = web.Application(client_max_size=64 << 20)
    model = f"/v2/models/{args.name}"
    server = {"name": "minimal", "version": "1", "extensions": ["binary_tensor_data"]}
    app.router.add_get("/v2", ok(json.dumps(server).encode()))
    app.router.add_get("/v2/health/ready", ok(b'{"ready": true}'))
    app.router.add_get("/v2/health/live", ok(b'{"live": true}'))
    app.router.add_get(model, ok(metadata))
    app.router.add_get(f"{model}/config", ok(config))
    app.router.add_get(f"{model}/ready", ok(b'{"ready": true}'))
    app.router.add_post(f"{model}/infer", infer)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


def kserve_server(args: argparse.Namespace) -> None:
    sys.argv = sys.argv[:1]  # kserve parses the command line when imported
    import grpc
    import kserve
    from fastapi.responses import Response
    from kserve import InferOutput, InferResponse, model_server
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    config_json, config_pb = args.config.read_bytes(), args.config_pb.read_bytes()
    metadata = model_metadata(session(args.model, 1), args.name)

    class OnnxModel(kserve.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(args.name)
            self.session = session(args.model, args.threads)
            self.names = [o.name for o in self.session.get_outputs()]
            self.ready = True

        def get_input_types(self) -> list[dict[str, Any]]:
            return metadata["inputs"]

        def get_output_types(self) -> list[dict[str, Any]]:
            return metadata["outputs"]

        def predict(self, payload: Any, headers: Any = None) -> Any:
            feeds = {t.name: t.as_numpy() for t in payload.inputs}
            outputs = []
            for name, array in zip(self.names, self.session.run(None, feeds), strict=True):
                output = InferOutput(name, list(array.shape), DATATYPES[array.dtype.name])
                output.set_data_from_numpy(array, binary_data=True)
                outputs.append(output)
            return InferResponse(
                payload.id or "",
                self.name,
                outputs,
                use_binary_outputs=payload.use_binary_outputs,
                requested_outputs=payload.request_outputs,
            )

    async def config() -> Response:
        return Response(config_json, media_type="application/json")

    model_server.app.add_api_route(f"/v2/models/{args.name}/config", config, methods=["GET"])
    add = grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server

    def with_model_config(servicer: Any, server: Any) -> None:
        add(servicer, server)

        async def model_config(request: bytes, context: Any) -> bytes:
            return config_pb

        handler = grpc.unary_unary_rpc_method_handler(
            model_config, request_deserializer=bytes, response_serializer=bytes
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService", {"ModelConfig": handler}
            ),)
        )  # fmt: skip

    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server = with_model_config
    kserve.ModelServer(
        http_port=args.port,
        grpc_port=args.grpc_port,
        workers=1,
        enable_docs_url=False,
        enable_latency_logging=False,  # its per-request log lines, off as edgeport's are
    ).start([OnnxModel()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("minimal", "kserve"))
    parser.add_argument("model", type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", type=Path, required=True, help="the model config as JSON")
    parser.add_argument("--config-pb", type=Path, help="the ModelConfigResponse, serialized")
    args = parser.parse_args()
    (minimal if args.kind == "minimal" else kserve_server)(args)


if __name__ == "__main__":
    sys.exit(main())
