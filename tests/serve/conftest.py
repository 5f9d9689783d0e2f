"""A real ``optkit serve`` process on 127.0.0.1 (a free port), stopped with SIGTERM after the test."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")


class Served:
    def __init__(self, proc: subprocess.Popen, base: str, model: str, lines: "queue.Queue[str]") -> None:
        self.proc, self.base, self.model, self.lines = proc, base, model, lines

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def post(self, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes, dict]:
        req = Request(self.url(path), data=body, headers=headers or {"Content-Type": "application/json"}, method="POST")
        try:
            with urlopen(req, timeout=30) as resp:
                return resp.status, resp.read(), dict(resp.headers)
        except HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urlopen(self.url(path), timeout=30) as resp:
                return resp.status, resp.read()
        except HTTPError as err:
            return err.code, err.read()

    def infer_json(self, feed: dict, model: str | None = None) -> tuple[int, dict]:
        doc = {"inputs": [{"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
                          for n, a in feed.items()]}
        status, body, _ = self.post(f"/v2/models/{model or self.model}/infer", json.dumps(doc).encode())
        return status, json.loads(body)

    def stdout_rest(self, timeout: float = 10) -> str:
        out, end = [], time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                out.append(self.lines.get(timeout=0.2))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
        return "".join(out)


@contextmanager
def served(artifact: Path, *args: str):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPTKIT_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "optkit", "serve", str(artifact), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=120)
        assert line.startswith("serving "), line + proc.stderr.read()
        base, model = line.split(" on ")[1].split()[0], line.split()[1]
        assert base.startswith("http://127.0.0.1:")
        s = Served(proc, base, model, lines)
        for _ in range(100):
            if s.get("/v2/health/ready")[0] == 200:
                break
            time.sleep(0.1)
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
