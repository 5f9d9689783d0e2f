"""The ASGI app in process: the infer hot path (bare ASGI, before Starlette) and Starlette's route answer alike -
outputs, errors, headers - and the model's metadata names the batching policy."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

pytest.importorskip("starlette")

from optkit.serve.app import ModelServer, build_app  # noqa: E402
from optkit.types.serve_config import ServeConfig  # noqa: E402


async def _call(app, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    sent: list[dict] = []
    chunks = [body[:7], body[7:]]  # the body in two messages, as a client's packets may split it

    async def receive():
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message):
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": raw,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, content


def test_the_hot_path_and_starlettes_route_answer_alike(tiny_onnx, tiny):
    with np.load(tiny["eval"]) as data:
        x = data["input"][:3]
    good = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.ravel().tolist()}]}).encode()
    bad = json.dumps({"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [0]}]}).encode()

    async def go(fast: bool):
        server = ModelServer(tiny_onnx, ServeConfig())
        app = build_app(server, fast_infer=fast)
        await server.start()
        try:
            return [await _call(app, "POST", "/v2/models/tiny/infer", good),
                    await _call(app, "POST", "/v2/models/tiny/versions/1/infer", good),
                    await _call(app, "POST", "/v2/models/tiny/infer", bad),
                    await _call(app, "POST", "/v2/models/other/infer", good),
                    await _call(app, "POST", "/v2/models/tiny/infer", good, {"content-length": str(2**40)}),
                    await _call(app, "GET", "/v2/models/tiny", b"")]
        finally:
            await server.stop()

    fast, plain = asyncio.run(go(True)), asyncio.run(go(False))
    assert [f[0] for f in fast] == [p[0] for p in plain] == [200, 200, 400, 404, 413, 200]
    for f, p in zip(fast, plain):
        assert json.loads(f[2]) == json.loads(p[2])
        assert f[1]["content-type"] == p[1]["content-type"] and int(f[1]["content-length"]) == len(f[2])
    out = json.loads(fast[0][2])["outputs"][0]
    assert out["shape"][0] == 3
    assert "unknown input 'nope'" in json.loads(fast[2][2])["error"]
    assert json.loads(fast[5][2])["parameters"]["batch_policy"] == "adaptive"
