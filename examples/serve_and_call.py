"""Serve a model with ``edgeport serve`` and call it with Triton's own client.

    python examples/serve_and_call.py bundles/digits
    python examples/serve_and_call.py model.onnx --port 8123

Starts ``edgeport serve MODEL`` (needs ``edgeport-runtime[serve]``), waits until it is ready,
reads the model's inputs from its metadata, sends one request with ``tritonclient.http``
(``pip install 'tritonclient[http]'``), prints the outputs and stops the server with Ctrl-C's
signal, as a person at a terminal would.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

STARTUP_S = 180  # a local Ray cluster and the model's replica start in well under a minute


def wait_ready(client: triton.InferenceServerClient, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"edgeport serve exited with code {server.returncode}")
        try:
            if client.is_server_ready():
                return
        except (OSError, InferenceServerException):
            pass  # not listening yet
        time.sleep(0.5)
    raise SystemExit(f"edgeport serve was not ready after {STARTUP_S} s")


def request(name: str, client: triton.InferenceServerClient) -> dict[str, np.ndarray]:
    """One request with every input at its smallest shape (dynamic dimensions 1), zeros."""
    metadata = client.get_model_metadata(name)
    inputs = []
    for spec in metadata["inputs"]:
        shape = [dim if dim > 0 else 1 for dim in spec["shape"]]
        tensor = triton.InferInput(spec["name"], shape, spec["datatype"])
        tensor.set_data_from_numpy(np.zeros(shape, triton.triton_to_np_dtype(spec["datatype"])))
        inputs.append(tensor)
    result = client.infer(name, inputs)
    return {out["name"]: result.as_numpy(out["name"]) for out in metadata["outputs"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a bundle directory, .onnx or engine file")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)

    edgeport = Path(sys.executable).with_name("edgeport")
    command = [str(edgeport), "serve", str(args.model), "--name", "model", "--port", str(args.port)]
    server = subprocess.Popen([*command, "--threads", "1", "--no-access-log"])
    try:
        client = triton.InferenceServerClient(f"127.0.0.1:{args.port}")
        wait_ready(client, server)
        for name, array in request("model", client).items():
            print(f"{name}: {array.dtype} {list(array.shape)} {array.ravel()[:5]}")
    finally:
        server.send_signal(signal.SIGINT)  # edgeport serve removes what it started, then exits
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            raise


if __name__ == "__main__":
    main()
