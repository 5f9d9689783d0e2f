"""Run the app under uvicorn on a socket bound here (so ``--port 0`` can say which port it got).

SIGTERM/SIGINT: uvicorn stops accepting, lets in-flight requests finish (up to ``drain_s``), then the app's
lifespan runs what the batcher still holds and closes the runtimes.
"""
from __future__ import annotations

import socket
from pathlib import Path

from optkit.serve.app import ModelServer, build_app
from optkit.types.errors import MissingDependencyError, UsageError
from optkit.types.serve_config import ServeConfig


def _need_stack() -> None:
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"serving needs {exc.name}", hint="pip install 'optkit[serve]'") from None


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror})",
                         hint="Choose another --port (0 picks a free one) or --host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(artifact: str | Path, config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000,
          name: str | None = None, drain_s: float = 30.0) -> None:
    _need_stack()
    import uvicorn

    server = ModelServer(artifact, config, name)
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {server.name} ({server.artifact.format}, inputs {', '.join(server.specs)}) on "
          f"http://{shown}:{bound}  max batch {server.batcher.max_batch}, queue delay "
          f"{config.max_queue_delay_ms:g} ms ({config.batch_policy}), {config.instances} instance(s) x "
          f"{config.threads} thread(s)"
          + (f", cache {config.cache_size}" if config.cache_size else ""), flush=True)
    uvicorn_config = uvicorn.Config(build_app(server), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=drain_s, timeout_keep_alive=30)
    uvicorn.Server(uvicorn_config).run(sockets=[sock])  # on SIGTERM it drains, then re-raises the signal
