"""Model Analyzer-like search: serve an artifact under each batching setting (a fresh ``optkit serve`` process on a
free loopback port), load it at each concurrency, and keep the highest throughput whose p99 meets the SLO."""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optkit.serve.loadtest import LoadPoint, fetch_json, requests_from, run_load
from optkit.types.errors import StepError


@dataclass
class Started:
    proc: subprocess.Popen
    base: str
    model: str


def start_server(artifact: str | Path, settings: dict[str, Any], timeout_s: float = 120.0) -> Started:
    cmd = [sys.executable, "-m", "optkit", "serve", str(artifact), "--host", "127.0.0.1", "--port", "0"]
    for key, value in settings.items():
        if value is None or value == ():
            continue
        cmd += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                raise StepError(f"optkit serve exited ({proc.returncode}): {proc.stderr.read().strip()[-300:]}")
            continue
        if line.startswith("serving "):
            model = line.split()[1]
            base = line.split(" on ")[1].split()[0]
            while time.monotonic() < deadline:
                try:
                    if fetch_json(f"{base}/v2/health/ready", timeout=2).get("ready"):
                        return Started(proc, base, model)
                except OSError:
                    pass
                time.sleep(0.1)
    stop_server(proc)
    raise StepError(f"optkit serve did not become ready within {timeout_s:.0f}s")


def stop_server(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def best_point(points: list[LoadPoint], slo_p99_ms: float | None) -> LoadPoint | None:
    meeting = [p for p in points if p.ok and not p.errors and (slo_p99_ms is None or
                                                               (p.p99_ms is not None and p.p99_ms <= slo_p99_ms))]
    return max(meeting, key=lambda p: p.throughput, default=None)


def sweep(artifact: str | Path, *, max_batches: list[int], delays_ms: list[float], concurrencies: list[int],
          threads: int, instances: int, duration_s: float, warmup_s: float, data: dict | None, rows: int,
          say=print, policies: tuple[str, ...] | list[str] = ("adaptive",)) -> list[LoadPoint]:
    """Every max batch x delay x policy (max batch 1: one setting, it never waits), each at every concurrency."""
    points: list[LoadPoint] = []
    settings = [(b, d, pol) for b in max_batches for d in (delays_ms if b > 1 else delays_ms[:1])
                for pol in (policies if b > 1 else policies[:1])]
    for k, (max_batch, delay, policy) in enumerate(settings, 1):
        config = {"max_batch": max_batch, "max_queue_delay_ms": delay, "batch_policy": policy, "threads": threads,
                  "instances": instances}
        started = start_server(artifact, config)
        try:
            meta = fetch_json(f"{started.base}/v2/models/{started.model}")
            bodies = requests_from(meta, data, rows)
            for c in concurrencies:
                point = run_load(started.base, started.model, bodies, concurrency=c, duration_s=duration_s,
                                 warmup_s=warmup_s)
                point.config = config
                points.append(point)
                say(f"  [{k}/{len(settings)}] max batch {max_batch}, delay {delay:g} ms ({policy}), concurrency {c}: "
                    f"{point.throughput:.0f}/s, p99 {point.p99_ms} ms, mean batch {point.mean_batch}"
                    + (f", errors {point.errors}" if point.errors else ""))
        finally:
            stop_server(started.proc)
    return points
