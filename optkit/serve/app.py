"""The ASGI app: Open Inference Protocol v2 routes over one model, a dynamic batcher, metrics and a response cache.

Routes: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}[/versions/{v}]`` (metadata),
``.../ready``, ``POST .../infer``, ``GET /metrics``. Every error is JSON ``{"error": "..."}``: 400 for a request the
model cannot take, 404 for an unknown model, 413 for a body over the limit, 503 when the queue is full or the
server is draining, 500 when the runtime fails a batch (the server keeps serving).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, MutableMapping

import numpy as np

from optkit.eval.measure import static_batch
from optkit.serve.batcher import Batcher, QueueFull, Stopping
from optkit.serve.cache import ResponseCache, request_key
from optkit.serve.metrics import ServerMetrics
from optkit.serve.protocol import HEADER_LENGTH, ProtocolError, encode_infer, parse_infer, tensor_metadata
from optkit.types.serve_config import ServeConfig

MAX_BODY_BYTES = 64 * 2**20  # a request body over this is refused (413) before it is read

# ASGI's shapes, as starlette.types names them (starlette is imported only when a server starts)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
HotInfer = Callable[[Scope, Receive, Send, str, "str | None"], Awaitable[None]]


class ModelServer:
    """One artifact behind the batcher; the Starlette app's state."""

    def __init__(self, artifact_path: str | Path, config: ServeConfig, name: str | None = None) -> None:
        from optkit.backends import open_runner
        from optkit.backends.opening import open_artifact

        self.artifact = open_artifact(artifact_path)
        self.config = config
        self.name = name or self.artifact.path.stem.split(".")[0]
        self.runners = [open_runner(self.artifact, config.threads) for _ in range(config.instances)]
        specs = {s.name: s for s in self.artifact.inputs}
        self.specs = {n: specs[n] for n in self.runners[0].input_names if n in specs} or specs
        self.output_names = list(self.runners[0].output_names)
        self.metrics = ServerMetrics(self.name)
        self.cache = ResponseCache(config.cache_size) if config.cache_size > 0 else None
        padded, sequence_outputs = self.padding() if config.pad_sequences else (frozenset(), frozenset())
        self.batcher = Batcher.configured(self.runners, config, fixed_batch=static_batch(self.artifact), padded=padded,
                                          sequence_outputs=sequence_outputs, on_batch=self.metrics.on_batch)
        self.ready = False

    def padding(self) -> tuple[frozenset[str], frozenset[str]]:
        """Token models (an ``attention_mask`` input): their integer inputs with a dynamic axis 1 may be padded to
        share a batch; outputs with a dynamic axis 1 are per token and cut back. Anything else: no padding."""
        if "attention_mask" not in self.specs:
            return frozenset(), frozenset()
        padded = frozenset(n for n, s in self.specs.items() if len(s.shape) >= 2 and not isinstance(s.shape[1], int)
                           and np.issubdtype(np.dtype(s.dtype), np.integer))
        outputs = {s.name: s for s in self.artifact.outputs}
        sequence = frozenset(n for n in self.output_names if n in outputs and len(outputs[n].shape) >= 2
                             and not isinstance(outputs[n].shape[1], int))
        return padded, sequence

    def metadata(self) -> dict[str, Any]:
        outputs = {s.name: s for s in self.artifact.outputs}
        return {"name": self.name, "versions": list(VERSIONS), "platform": f"optkit_{self.artifact.format}",
                "inputs": [tensor_metadata(s) for s in self.specs.values()],
                "outputs": [tensor_metadata(outputs[n]) if n in outputs else {"name": n, "datatype": "FP32",
                                                                              "shape": [-1]}
                            for n in self.output_names],
                "parameters": {"max_batch_size": self.batcher.max_batch,
                               "max_queue_delay_ms": self.config.max_queue_delay_ms,
                               "batch_policy": self.batcher.policy,
                               "padded_inputs": sorted(self.batcher.padded),
                               "instances": self.config.instances}}

    async def start(self) -> None:
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()
        for runner in self.runners:
            runner.close()
        print(f"stopped: {self.batcher.stats.batches} batches, {self.batcher.stats.rows} rows served", flush=True)


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


VERSIONS = ("1",)  # a server serves one artifact: its one version


def _unknown_model(server: ModelServer, name: str, version: str | None = None) -> str | None:
    """The 404 message for a model name (or a version of it) this server does not have, else None."""
    if name != server.name:
        return f"no model '{name}'; this server has '{server.name}'"
    if version is not None and version not in VERSIONS:
        return f"model '{name}' has no version '{version}'; it has version {', '.join(VERSIONS)}"
    return None


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """A request body from its chunks, refused (413) as soon as it passes ``limit`` bytes."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"the body is over {limit} bytes, the server's limit", status=413)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _error(status: int, message: str) -> Any:
    from starlette.responses import Response

    return Response(_error_body(message), status_code=status, media_type="application/json")


async def infer_request(server: ModelServer, name: str, headers: dict[str, str],
                        read_body: Callable[[int], Awaitable[bytes]],
                        version: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    """One v2 infer call, independent of the web framework: (status, body, headers), errors as JSON bodies."""
    arrived = time.perf_counter()
    status, content, out_headers = await _infer(server, name, headers, read_body, version)
    server.metrics.answered(status, time.perf_counter() - arrived)
    return status, content, out_headers


JSON_HEADERS = {"content-type": "application/json"}


async def _infer(server: ModelServer, name: str, headers: dict[str, str],
                 read_body: Callable[[int], Awaitable[bytes]], version: str | None = None
                 ) -> tuple[int, bytes, dict[str, str]]:
    missing = _unknown_model(server, name, version)
    if missing:
        return 404, _error_body(missing), JSON_HEADERS
    batcher = server.batcher
    batcher.expect()
    expected = True
    try:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ProtocolError(f"the body is {int(declared)} bytes; the server takes at most {MAX_BODY_BYTES}",
                                status=413)
        body = await read_body(MAX_BODY_BYTES)
        parsed = parse_infer(body, headers.get(HEADER_LENGTH.lower()), server.specs)
        cache = server.cache
        key = request_key(parsed.inputs) if cache is not None else ""
        outputs = cache.get(key) if cache is not None else None
        if cache is not None:
            server.metrics.cache.labels(model=server.name, result="hit" if outputs is not None else "miss").inc()
        if outputs is None:
            expected = False
            outputs = await batcher.submit(parsed.inputs, expected=True)
            if cache is not None:
                cache.put(key, outputs)
        content, out_headers = encode_infer(server.name, parsed, outputs, server.output_names)
    except ProtocolError as exc:
        return exc.status, _error_body(str(exc)), JSON_HEADERS
    except (QueueFull, Stopping) as exc:
        return 503, _error_body(str(exc)), JSON_HEADERS
    except ValueError as exc:  # a request the batcher cannot place (rows over a fixed batch)
        return 400, _error_body(str(exc)), JSON_HEADERS
    except Exception as exc:  # the runtime failed this batch; the server goes on
        return 500, _error_body(f"inference failed: {type(exc).__name__}: {str(exc)[:300]}"), JSON_HEADERS
    finally:
        if expected:  # it never reached the batcher
            batcher.withdraw()
        server.metrics.queued.set(batcher.queued)
    return 200, content, out_headers


INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


def asgi_infer(server: ModelServer) -> HotInfer:
    """The infer route as a bare ASGI callable - the hot path skips the framework's routing, middleware and
    response objects (measured in benchmarks/serving_stack.py)."""

    async def call(scope: Scope, receive: Receive, send: Send, name: str, version: str | None = None) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ProtocolError("the client went away before sending its body")
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        async def read_body(limit: int) -> bytes:
            return await read_limited(chunks(), limit)

        try:
            status, content, out_headers = await infer_request(server, name, headers, read_body, version)
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client or the log
            status, content, out_headers = 500, _error_body(f"internal error: {type(exc).__name__}"), JSON_HEADERS
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in out_headers.items()]
        raw.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": content})

    return call


def _routes(server: ModelServer) -> list[Any]:
    """The v2 routes over ``server``: health, metadata, infer (Starlette's path, when the hot path is off), metrics."""
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    def unknown(request: Any) -> Any:
        """The 404 for a model name this server does not have, else None."""
        missing = _unknown_model(server, request.path_params["name"], request.path_params.get("version"))
        return _error(404, missing) if missing else None

    async def live(request: Any) -> Any:
        return JSONResponse({"live": True})

    async def ready(request: Any) -> Any:
        return JSONResponse({"ready": server.ready}, status_code=200 if server.ready else 503)

    async def server_metadata(request: Any) -> Any:
        from optkit._version import __version__

        return JSONResponse({"name": "optkit", "version": __version__, "extensions": ["binary_tensor_data"],
                             "models": [server.name]})  # "models" is optkit's addition: loadtest reads it

    async def model_metadata(request: Any) -> Any:
        return unknown(request) or JSONResponse(server.metadata())

    async def model_ready(request: Any) -> Any:
        return unknown(request) or JSONResponse({"name": server.name, "ready": server.ready},
                                                status_code=200 if server.ready else 503)

    async def infer(request: Any) -> Any:
        async def read_body(limit: int) -> bytes:
            return await read_limited(request.stream(), limit)

        status, content, headers = await infer_request(server, request.path_params["name"], request.headers,
                                                       read_body, request.path_params.get("version"))
        return Response(content, status_code=status, headers=headers)

    async def metrics(request: Any) -> Any:
        body, content_type = server.metrics.render()
        return Response(body, media_type=content_type)

    return [
        Route("/v2", server_metadata), Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2/models/{name}", model_metadata), Route("/v2/models/{name}/versions/{version}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready), Route("/v2/models/{name}/versions/{version}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
        Route("/metrics", metrics),
    ]


async def _not_found(request: Any, exc: Exception) -> Any:
    return _error(getattr(exc, "status_code", 404), getattr(exc, "detail", None) or "not found")


async def _server_error(request: Any, exc: Exception) -> Any:
    return _error(500, f"internal error: {type(exc).__name__}")


def build_app(server: ModelServer, fast_infer: bool = True) -> ASGIApp:
    """The Starlette app; with ``fast_infer`` the infer route is answered before Starlette by ``asgi_infer``."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app: ASGIApp = Starlette(routes=_routes(server), lifespan=lifespan,
                             exception_handlers={404: _not_found, 405: _not_found, Exception: _server_error})
    if not fast_infer:
        return app
    hot = asgi_infer(server)

    async def front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = INFER_PATH.match(scope["path"])
            if match:
                await hot(scope, receive, send, match.group(1), match.group(2))
                return
        await app(scope, receive, send)

    return front
