"""A lean HTTP/1.1 client for the load test: keep-alive connections on ``asyncio.Protocol``,
each request's bytes encoded once, answers framed by ``Content-Length`` (or chunked).

A general client (aiohttp) spends about as much CPU per request as the server it measures; on a
machine that runs both, the client then sets the pace. This one does the least a load generator
must, so its numbers can be held against perf_analyzer's (C++) on the same server.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

_LENGTH_RE = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED_RE = re.compile(rb"\r\ntransfer-encoding:[ \t]*chunked", re.IGNORECASE)
_CLOSE_RE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


class HttpError(ConnectionError):
    """The connection failed or the answer was not HTTP/1.1 as expected."""


def encode_request(
    method: str, host: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
) -> bytes:
    """A request's bytes, sent as they are for each request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items() if k.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HttpError(f"the server closed the connection ({exc})"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        try:
            answer = self._answer()
        except HttpError as exc:
            waiter.set_exception(exc)
            return
        if answer is not None:
            waiter.set_result(answer)

    def _answer(self) -> tuple[int, bytes] | None:
        """(status, body) once the buffer holds a whole answer."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buffer[:end])
        if not head.startswith(b"HTTP/1.") or len(head) < 12 or not head[9:12].isdigit():
            raise HttpError(f"not an HTTP/1.1 answer: {head[:60]!r}")
        start = end + 4
        match = _LENGTH_RE.search(head)
        if match is not None:
            stop = start + int(match.group(1))
            if len(buffer) < stop:
                return None
            body = bytes(buffer[start:stop])
        elif _CHUNKED_RE.search(head):
            body, stop = _dechunk(buffer, start)  # type: ignore[assignment]
            if body is None:
                return None
        else:
            raise HttpError("the answer has neither Content-Length nor chunked encoding")
        del buffer[:stop]
        if _CLOSE_RE.search(head) and self.transport is not None:
            self.transport.close()
        return int(head[9:12]), body

    async def request(self, payload: bytes, timeout_s: float) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        if self.transport is None or self.closed:
            raise HttpError("the connection is closed")
        self.transport.write(payload)
        timer = loop.call_later(timeout_s, _expire, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None


def _expire(waiter: asyncio.Future[tuple[int, bytes]]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


def _dechunk(buffer: bytearray, start: int) -> tuple[bytes | None, int]:
    """A chunked body from ``start`` and where it ends (None while incomplete)."""
    parts: list[bytes] = []
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None, 0
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            trailer = buffer.find(b"\r\n", at)
            return (b"".join(parts), trailer + 2) if trailer >= 0 else (None, 0)
        if len(buffer) < at + size + 2:
            return None, 0
        parts.append(bytes(buffer[at : at + size]))
        at += size + 2


class HttpPool:
    """Keep-alive connections to one ``host:port``, opened as requests need them."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self.host, _, port = address.rpartition(":")
        self.port = int(port)
        self.address, self.timeout_s = address, timeout_s
        self.idle: list[_Connection] = []
        self.opened: list[_Connection] = []

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        """Send ``payload`` (from :func:`encode_request`) on an idle connection, or a new one."""
        connection = self.idle.pop() if self.idle else None
        if connection is None or connection.closed:
            loop = asyncio.get_running_loop()
            try:
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
            except OSError as exc:
                raise HttpError(f"cannot connect to {self.address}: {exc}") from exc
            self.opened.append(connection)
        try:
            answer = await connection.request(payload, self.timeout_s)
        except BaseException:
            if connection.transport is not None:
                connection.transport.close()
            raise
        if not connection.closed:
            self.idle.append(connection)
        return answer

    def close(self) -> None:
        for connection in self.opened:
            if connection.transport is not None:
                connection.transport.close()
        self.idle.clear()
        self.opened.clear()
