"""Helpers of the serve tests: plain HTTP requests, JSON errors, polling, free ports."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, method: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one request; HTTP errors are answers."""
    request = urllib.request.Request(
        url, data=body, headers=headers or {}, method=method or ("GET" if body is None else "POST")
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as resp:
            return resp.status, _lower(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, _lower(exc.headers), exc.read()


def _lower(headers: object) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}  # type: ignore[attr-defined]


def error_of(body: bytes) -> str:
    """The message of a JSON ``{"error": ...}`` body."""
    data = json.loads(body)
    assert set(data) == {"error"}, data
    return str(data["error"])


def wait_for(check: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll ``check()`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
