"""Which web stack optkit serve answers infer requests on: the same handler behind three ASGI stacks on uvicorn.

    python benchmarks/serving_stack.py [--concurrency 8] [--window 3] [--rounds 3]

Sides (each its own server process on 127.0.0.1, uvicorn with uvloop + httptools, one instance x one thread):
  - bare ASGI: the infer route answered before any framework (optkit serve's default, app.asgi_infer)
  - Starlette: the same handler as a Starlette route (build_app(fast_infer=False))
  - FastAPI: the same handler as a FastAPI route (skipped when fastapi is not installed; it is not a dependency)
The model is an Identity of digits_cnn's input, so the figures are the stack's own cost: requests/s at closed-loop
concurrency N (optkit loadtest's client, windows interleaved A B C C B A ...) and server CPU per request.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, cpu_seconds, print_checks, print_machine

sys.path.insert(0, str(ROOT))
from optkit.serve.loadtest import fetch_json, requests_from, run_load  # noqa: E402


def identity_model(work: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 32, 32])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", [x], [y])
    path = work / "identity.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def serve(stack: str, artifact: str, port_file: str) -> None:
    """Child process: serve ``artifact`` on ``stack`` and write the port once listening."""
    import uvicorn

    from optkit.serve.app import ModelServer, build_app, infer_request
    from optkit.types.serve_config import ServeConfig
    from optkit.serve.protocol import ProtocolError
    from optkit.serve.server import bind

    server = ModelServer(artifact, ServeConfig(max_batch=1))
    if stack == "fastapi":
        from contextlib import asynccontextmanager

        from fastapi import FastAPI, Request
        from fastapi.responses import Response

        @asynccontextmanager
        async def lifespan(app):
            await server.start()
            yield
            await server.stop()

        app = FastAPI(lifespan=lifespan)

        async def infer(name, request):
            async def read_body(limit: int) -> bytes:
                body = await request.body()
                if len(body) > limit:
                    raise ProtocolError("over the limit", status=413)
                return body

            status, content, headers = await infer_request(server, name, request.headers, read_body)
            return Response(content, status_code=status, headers=headers)

        infer.__annotations__ = {"name": str, "request": Request}  # real classes: this module's are strings
        app.add_api_route("/v2/models/{name}/infer", infer, methods=["POST"])

        app.mount("/", build_app(server, fast_infer=False))  # metadata, health, /metrics
    else:
        app = build_app(server, fast_infer=stack == "bare")
    sock = bind("127.0.0.1", 0)
    Path(port_file).write_text(str(sock.getsockname()[1]))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")).run(sockets=[sock])


def start(stack: str, artifact: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port_file = work / f"{stack}.port"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", stack, str(artifact), str(port_file)])
    for _ in range(300):
        if port_file.exists() and port_file.read_text():
            base = f"http://127.0.0.1:{port_file.read_text()}"
            try:
                if fetch_json(f"{base}/v2/health/ready", timeout=2).get("ready"):
                    return proc, base
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the {stack} server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print_machine()
    stacks = ["bare", "starlette"]
    try:
        import fastapi

        stacks.append("fastapi")
        print(f"# fastapi {fastapi.__version__}")
    except ImportError:
        print("# fastapi is not installed: its side is skipped (pip install fastapi)")
    import starlette
    import uvicorn

    print(f"# starlette {starlette.__version__}, uvicorn {uvicorn.__version__}")
    work = Path(tempfile.mkdtemp(prefix="optkit_stack_"))
    artifact = identity_model(work)
    with np.load(ROOT / "sample_models" / "digits_cnn" / "eval.npz") as npz:
        data = {"input": npz["input"]}
    servers = {s: start(s, artifact, work) for s in stacks}
    got: dict[str, list[tuple[float, float]]] = {s: [] for s in stacks}
    try:
        bodies = requests_from(fetch_json(f"{servers['bare'][1]}/v2/models/identity"), data, 1)
        for r in range(args.rounds):
            for stack in (stacks if r % 2 == 0 else stacks[::-1]):
                proc, base = servers[stack]
                run_load(base, "identity", bodies, concurrency=args.concurrency, duration_s=0.5, warmup_s=0)
                cpu0 = cpu_seconds(proc.pid)
                point = run_load(base, "identity", bodies, concurrency=args.concurrency, duration_s=args.window,
                                 warmup_s=0)
                got[stack].append((point.throughput, (cpu_seconds(proc.pid) - cpu0) / max(point.ok, 1) * 1e3))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    print(f"\n## Identity model, closed loop, {args.concurrency} clients, {args.rounds} x {args.window:g}s windows")
    print("| stack | requests/s | server CPU ms/request |")
    print("|---|---|---|")
    res = {s: (statistics.mean(t for t, _ in v), statistics.mean(c for _, c in v)) for s, v in got.items()}
    for s, (tput, cpu) in res.items():
        print(f"| {s} | {tput:.0f} | {cpu:.3f} |")
    checks = [(f"bare ASGI hot path at least as fast as {s}", res["bare"][0] >= 0.97 * res[s][0],
               f"{res['bare'][0] / res[s][0]:.2f}x the requests/s, {res['bare'][1]:.3f} vs {res[s][1]:.3f} ms CPU")
              for s in stacks if s != "bare"]
    print_checks(checks, "which stack")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(*sys.argv[2:5])
    else:
        main()
