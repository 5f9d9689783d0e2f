"""The load client's HTTP/1.1: keep-alive connections that write pre-encoded requests and wait for whole responses,
parsed by httptools (llhttp, the parser uvicorn uses) - a wrk-like client.

Load client and server share this machine, so every cycle the client spends is one the server does not get. Measured
2026-12-02 on a 2-vCPU Xeon against optkit serve at 8 clients: 0.05 ms of client CPU per request, where aiohttp's
client (on uvloop) took 0.23 ms; benchmarks/serving.py prints the client's and the server's CPU per request.
"""
from __future__ import annotations

import asyncio
from collections import deque
from types import ModuleType
from typing import cast

from optkit.types.errors import MissingDependencyError


def _httptools() -> ModuleType:
    try:
        import httptools
    except ImportError:
        raise MissingDependencyError("loadtest needs httptools", hint="pip install 'optkit[serve]'") from None
    return httptools


def encode_http(method: str, host: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 request, encoded once and written as is on every send."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items() if k.lower() not in ("host", "content-length")]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self, keep_body: bool = False) -> None:
        self.parser = _httptools().HttpResponseParser(self)
        self.keep_body = keep_body
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.body: list[bytes] = []
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int, keep_body: bool = False) -> "Connection":
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: cls(keep_body), host, port)
        return conn

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # create_connection's: a stream transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # a malformed response ends this connection; the request is an error
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        if self.keep_body:
            self.body.append(body)

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        result = (self.parser.get_status_code(), b"".join(self.body))
        self.body = []
        if not self.parser.should_keep_alive():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """(status, body - empty unless ``keep_body``) of one pre-encoded request."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("the connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self.waiter

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class Pool:
    """Idle connections to one server, opened on demand (open-loop load can have many requests in flight)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: deque[Connection] = deque()
        self.all: list[Connection] = []

    async def request(self, raw: bytes) -> int:
        conn = None
        while self.idle:
            candidate = self.idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        if conn is None:
            conn = await Connection.open(self.host, self.port)
            self.all.append(conn)
        status, _ = await conn.request(raw)
        if not conn.closed:
            self.idle.append(conn)
        return status

    def close(self) -> None:
        for conn in self.all:
            conn.close()
