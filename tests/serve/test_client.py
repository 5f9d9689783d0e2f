"""The load client's HTTP/1.1 against a scripted asyncio server on 127.0.0.1: keep-alive reuse, a server that closes
the connection, a chunked body, and a malformed response (an error, never a hang)."""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("httptools")

from optkit.serve.client import Connection, Pool, encode_http  # noqa: E402

REPLIES = {
    b"/ok": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"/close": b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"/bad": b"NOT HTTP AT ALL\r\n\r\n",
}


async def _scripted(reader, writer):
    connections.append(writer)
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length")), 0)
        await reader.readexactly(length)
        path = head.split(b" ")[1]
        writer.write(REPLIES[path])
        await writer.drain()
        if path in (b"/close", b"/bad"):
            writer.close()
            return


connections: list = []


def test_keep_alive_close_chunked_and_malformed():
    async def go():
        server = await asyncio.start_server(_scripted, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        host = f"127.0.0.1:{port}"
        conn = await Connection.open("127.0.0.1", port, keep_body=True)
        got = [await conn.request(encode_http("POST", host, "/ok", b"xyz")) for _ in range(3)]
        assert got == [(200, b"hi")] * 3 and len(connections) == 1  # one connection, kept alive
        assert await conn.request(encode_http("GET", host, "/chunked")) == (200, b"abcde")
        assert (await conn.request(encode_http("GET", host, "/close")))[0] == 503 and conn.closed
        with pytest.raises(ConnectionResetError):
            await conn.request(encode_http("GET", host, "/ok"))
        pool = Pool("127.0.0.1", port)
        assert await pool.request(encode_http("GET", host, "/close")) == 503
        assert await pool.request(encode_http("GET", host, "/ok")) == 200  # a fresh connection replaced the closed one
        with pytest.raises(Exception) as caught:
            await asyncio.wait_for(pool.request(encode_http("GET", host, "/bad")), 5)
        assert not isinstance(caught.value, asyncio.TimeoutError), "a malformed response must fail, not hang"
        pool.close()
        server.close()
        await server.wait_closed()

    asyncio.run(go())
