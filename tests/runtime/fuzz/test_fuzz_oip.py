"""Fuzzing of ``edgeport serve``'s request reader (the Open Inference Protocol codec): mutated
JSON requests, damaged binary requests and gzip bodies give a request or an ``EdgeportError``
(the server's 400/413/415), within the harness's time and memory bounds."""

from __future__ import annotations

import gzip
import json

import numpy as np
from harness import guarded
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_readers import damage, mutate

from edgeport.runtime.serve.protocol import decode_infer_request, decompress, encode_infer_request

FEEDS = {
    "image": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
    "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
    "mask": np.array([[True, False, True]]),
}
OUTPUTS = ("logits", "count")


@given(data=st.data())
def test_fuzz_oip_json_requests(data: st.DataObject) -> None:
    body, _ = encode_infer_request(FEEDS, binary=False, outputs=["count"], request_id="r")
    doc = mutate(data, json.loads(body))
    guarded(decode_infer_request, "oip request (json)")(json.dumps(doc).encode(), None, OUTPUTS)


@given(data=st.data())
def test_fuzz_oip_binary_requests(data: st.DataObject) -> None:
    body, headers = encode_infer_request(FEEDS, binary=True)
    length = headers["inference-header-content-length"]
    if data.draw(st.booleans()):
        length = str(data.draw(st.integers(-5, len(body) + 5)))
    guarded(decode_infer_request, "oip request (binary)")(damage(data, body), length, OUTPUTS)


@given(data=st.data())
def test_fuzz_oip_compressed_bodies(data: st.DataObject) -> None:
    body, _ = encode_infer_request(FEEDS, binary=False)
    blob = damage(data, gzip.compress(body))
    guarded(decompress, "oip body (gzip)")(
        blob, data.draw(st.sampled_from(["gzip", "deflate"])), 1 << 20
    )


LARGE = {  # above LARGE_JSON as JSON: read by the chunked path
    "x": np.linspace(-1, 1, 12_000, dtype=np.float32).reshape(3, 4000),
    "ids": np.arange(9000, dtype=np.int64).reshape(3, 3000),
}


@given(data=st.data())
def test_fuzz_oip_large_json_requests(data: st.DataObject) -> None:
    body, _ = encode_infer_request(LARGE, binary=False)
    guarded(decode_infer_request, "oip request (large json)")(damage(data, body), None, OUTPUTS)
