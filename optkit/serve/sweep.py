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
from typing import IO, Callable

import numpy as np
from pydantic import ValidationError

from optkit.serve.loadtest import Load, LoadPoint, fetch_json, requests_from, run_load
from optkit.types.errors import StepError, UsageError
from optkit.types.serve_config import BatchPolicy, ServeConfig


@dataclass(frozen=True)
class SweepPlan:
    """The batching settings a sweep serves an artifact under, each with the same threads and instances."""
    max_batches: tuple[int, ...] = (1, 4, 8, 16)
    delays_ms: tuple[float, ...] = (1.0, 4.0)
    policies: tuple[BatchPolicy, ...] = ("adaptive",)
    threads: int = 1
    instances: int = 1

    def settings(self) -> list[ServeConfig]:
        """Every max batch x delay x policy (max batch 1: one setting, it never waits). Only the swept keys are set,
        so a server is started with those options alone."""
        try:
            return [ServeConfig(max_batch=b, max_queue_delay_ms=d, batch_policy=pol, threads=self.threads,
                                instances=self.instances)
                    for b in self.max_batches for d in (self.delays_ms if b > 1 else self.delays_ms[:1])
                    for pol in (self.policies if b > 1 else self.policies[:1])]
        except ValidationError as exc:  # a value optkit serve would refuse: said before any server starts
            err = exc.errors()[0]
            flag = "--" + str(err["loc"][0]).replace("_", "-")
            raise UsageError(f"{flag} {err['input']!r}: {err['msg']}", hint=f"optkit serve {flag} takes it") from None


@dataclass
class Started:
    proc: subprocess.Popen[str]
    base: str
    model: str


def serve_command(artifact: str | Path, config: ServeConfig) -> list[str]:
    """``optkit serve ARTIFACT`` on a free loopback port with the options ``config`` sets (its defaults left out)."""
    cmd = [sys.executable, "-m", "optkit", "serve", str(artifact), "--host", "127.0.0.1", "--port", "0"]
    for key, value in config.model_dump(exclude_unset=True).items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            cmd.append(flag if value else f"--no-{flag[2:]}")
        elif value != []:
            cmd += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return cmd


def _lines(stream: IO[str] | None) -> queue.Queue[str]:
    """A stream's lines, read by a thread of their own (so a wait for one can time out)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream or ():
            lines.put(line)
    threading.Thread(target=read, daemon=True).start()
    return lines


def start_server(artifact: str | Path, config: ServeConfig, timeout_s: float = 120.0) -> Started:
    proc = subprocess.Popen(serve_command(artifact, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = _lines(proc.stdout)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                stderr = proc.stderr.read() if proc.stderr is not None else ""
                raise StepError(f"optkit serve exited ({proc.returncode}): {stderr.strip()[-300:]}")
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


def stop_server(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
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


def sweep(artifact: str | Path, plan: SweepPlan, load: Load, data: dict[str, np.ndarray] | None,
          say: Callable[[str], None] = print) -> list[LoadPoint]:
    """Every setting of ``plan``, each at every concurrency of ``load``."""
    points: list[LoadPoint] = []
    settings = plan.settings()
    for k, config in enumerate(settings, 1):
        started = start_server(artifact, config)
        try:
            meta = fetch_json(f"{started.base}/v2/models/{started.model}")
            bodies = requests_from(meta, data, load.rows)
            for c in load.concurrencies:
                point = run_load(started.base, started.model, bodies, concurrency=c, duration_s=load.duration_s,
                                 warmup_s=load.warmup_s)
                point.config = config
                points.append(point)
                say(f"  [{k}/{len(settings)}] max batch {config.max_batch}, delay {config.max_queue_delay_ms:g} ms "
                    f"({config.batch_policy}), concurrency {c}: {point.throughput:.0f}/s, p99 {point.p99_ms} ms, "
                    f"mean batch {point.mean_batch}" + (f", errors {point.errors}" if point.errors else ""))
        finally:
            stop_server(started.proc)
    return points
