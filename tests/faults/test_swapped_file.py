"""A model file swapped while it is loaded: a thread keeps replacing the artifact with a
same-size impostor and back (renamed over it, or rewritten in place) while 300 loads run. A
load either refuses the file (its bytes do not match the manifest) or runs the genuine model:
the bytes that were hashed are the bytes the engine got, so no run is ever unverified."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
import rt_bundles
import rt_graphs
from onnx import numpy_helper

from edgeport.runtime import load
from edgeport.runtime.errors import IntegrityError

LOADS = 300


def impostor(genuine: Path, path: Path) -> bytes:
    """The genuine model's bytes with other weights of the same size."""
    model = onnx.load(str(genuine))
    for init in model.graph.initializer:
        if init.name == "W":
            init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), "W"))
    rt_graphs.save(model, path)
    data = path.read_bytes()
    assert len(data) == genuine.stat().st_size and data != genuine.read_bytes()
    return data


def swapper(path: Path, versions: list[bytes], how: str, stop: threading.Event) -> int:
    """Swap ``path`` between ``versions`` until ``stop``; how many swaps were made."""
    swaps = 0
    spare = path.with_name(".swap")
    while not stop.is_set():
        data = versions[swaps % 2]
        if how == "rename":
            spare.write_bytes(data)
            spare.replace(path)
        else:
            with path.open("r+b") as handle:
                handle.write(data)
        swaps += 1
    return swaps


@pytest.mark.parametrize("how", ["rename", "rewrite"])
@pytest.mark.parametrize("backend", ["onnxruntime-cpu", "openvino"])
def test_no_load_runs_a_swapped_file(tmp_path: Path, backend: str, how: str) -> None:
    if backend == "openvino":
        pytest.importorskip("openvino")
    bundle = rt_bundles.gemm_bundle(tmp_path / "b")
    path = bundle / "model.fp32.onnx"
    genuine = path.read_bytes()
    versions = [impostor(path, tmp_path / "impostor.onnx"), genuine]
    batch = rt_graphs.integer_batch(2)
    want = rt_graphs.gemm_reference(batch)
    # no compiled-model cache: every OpenVINO load compiles the bytes it was handed
    options = {"cache_dir": ""} if backend == "openvino" else None
    counts = {"genuine": 0, "refused": 0, "unverified": 0}
    stop = threading.Event()
    swaps: list[int] = []
    thread = threading.Thread(target=lambda: swaps.append(swapper(path, versions, how, stop)))
    thread.start()
    try:
        for _ in range(LOADS):
            try:
                with load(bundle, backend=backend, threads=1, backend_options=options) as model:
                    out = model.run(batch)
            except IntegrityError:
                counts["refused"] += 1
                continue
            counts["genuine" if np.array_equal(out, want) else "unverified"] += 1
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert counts["unverified"] == 0, counts
    assert counts["refused"] > 0 and counts["genuine"] > 0 and swaps[0] >= 10, (counts, swaps)
    assert sum(counts.values()) == LOADS
