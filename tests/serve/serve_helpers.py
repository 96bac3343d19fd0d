"""Helpers of the serve tests: the one-process server in a thread, plain HTTP requests, JSON
errors, polling, free ports, process trees."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from edgeport.runtime.serve.server import Server
from edgeport.runtime.serve.settings import ServeSettings

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


class ThreadedServer:
    """A :class:`Server` running on an event loop in a thread of this process."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(settings)
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(timeout=120)

    @property
    def url(self) -> str:
        return self.settings.url

    def model_url(self, name: str) -> str:
        return self.server.model_url(name)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


def descendants(pid: int) -> set[int]:
    """The live processes below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_tree(pids: set[int]) -> None:
    """SIGKILL what is left of a test's processes."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total
