"""Load against an Open Inference Protocol v2 server on this machine: closed loop (N clients, each sending its
next request when the last is answered) or open loop (Poisson arrivals at a rate, latency counted from the
scheduled send time so a slow server cannot hide its queue). One asyncio client on keep-alive HTTP/1.1
connections (optkit.serve.client), requests pre-encoded with the binary tensor extension; the batch-size
distribution comes from the server's own /metrics.
Load only ever targets a loopback address.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from optkit.serve.protocol import DATATYPES, HEADER_LENGTH, V2_OF
from optkit.types.errors import UsageError
from optkit.types.serve_config import ServeConfig

if TYPE_CHECKING:
    from optkit.types.records import CpuInfo
    from optkit.serve.client import Pool

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
ANSWER_TIMEOUT_S = 60.0  # a request unanswered this long after its window ends is an error ("Timeout")
# the settings a sweep gives each server, in the order loadtest.json, serve.yaml and the sidecar list them
SWEPT = ("max_batch", "max_queue_delay_ms", "batch_policy", "threads", "instances")
Body = tuple[bytes, dict[str, str]]  # a pre-encoded infer request: its body and headers


@dataclass
class LoadPoint:
    mode: str                       # closed | open
    concurrency: int | None
    rate: float | None
    duration_s: float
    sent: int
    ok: int
    errors: dict[str, int]
    throughput: float               # answered requests per second (200s only)
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    batch_sizes: dict[str, int] = field(default_factory=dict)  # "<=N" bucket -> runs, from the server's /metrics
    mean_batch: float | None = None
    config: ServeConfig | None = None  # the server's settings, when loadtest started it

    def setting(self) -> dict[str, Any]:
        """The swept settings of the server this point loaded (empty for a server loadtest did not start)."""
        return {k: getattr(self.config, k) for k in SWEPT} if self.config is not None else {}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(replace(self, config=None)), "config": self.setting()}


@dataclass(frozen=True)
class Load:
    """How each point loads a server: closed loop at each concurrency, or open loop at each rate when rates are
    given; a measured window of ``duration_s`` after ``warmup_s``, ``rows`` rows per request."""
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16)
    rates: tuple[float, ...] = ()
    duration_s: float = 20.0
    warmup_s: float = 1.0
    rows: int = 1


@dataclass(frozen=True)
class LoadtestResult:
    """What one ``optkit loadtest`` measured and judged: every point, and the best one within the SLO."""
    target: str
    points: list[LoadPoint]
    best: LoadPoint | None  # the highest throughput within the SLO (without errors)
    slo_p99_ms: float | None
    cpu: CpuInfo  # the machine the figures were measured on

    @property
    def cpu_text(self) -> str:
        return self.cpu.text

    @property
    def settings_tried(self) -> int:
        return len({tuple(p.setting().items()) for p in self.points})

    def to_json(self) -> dict[str, Any]:
        return {"written_by": "optkit loadtest", "target": self.target, "cpu": self.cpu.to_json(), "slo_p99_ms": self.slo_p99_ms,
                "points": [p.to_dict() for p in self.points], "best": self.best.to_dict() if self.best else None}


def check_url(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise UsageError(f"{url}: load only ever targets this machine (http://127.0.0.1:PORT)",
                         hint="Start the server here with 'optkit serve ARTIFACT', or give loadtest the ARTIFACT")
    return f"http://{parts.hostname if ':' not in (parts.hostname or '') else f'[{parts.hostname}]'}:{parts.port or 80}"


def encode_request(feed: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """A v2 infer request with every tensor as binary data, asking for binary outputs (as tritonclient does)."""
    inputs, blobs = [], []
    for name, arr in feed.items():
        arr = np.ascontiguousarray(arr)
        blob = arr.tobytes()
        inputs.append({"name": name, "datatype": V2_OF[arr.dtype.name], "shape": list(arr.shape),
                       "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
    return head + b"".join(blobs), {HEADER_LENGTH: str(len(head)), "Content-Type": "application/octet-stream"}


@dataclass(frozen=True)
class InputMeta:
    """One input as a v2 server's model metadata describes it."""
    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # -1: a dynamic dimension

    @classmethod
    def listed(cls, metadata: dict[str, Any]) -> list[InputMeta]:
        return [cls(i["name"], np.dtype(DATATYPES[i["datatype"]]), tuple(i["shape"])) for i in metadata["inputs"]]


def requests_from(metadata: dict[str, Any], data: dict[str, np.ndarray] | None, rows: int, count: int = 32,
                  seq: int = 16) -> list[Body]:
    """``count`` request bodies of ``rows`` rows: from ``data`` (cycled) when given, else random tensors shaped by
    the model's metadata (dynamic non-batch dims as ``seq``)."""
    rng = np.random.default_rng(0)
    inputs = InputMeta.listed(metadata)
    bodies = []
    for i in range(count):
        feed = {}
        for spec in inputs:
            if data is not None and spec.name in data:
                arr = data[spec.name]
                idx = [(i * rows + k) % len(arr) for k in range(rows)]
                feed[spec.name] = arr[idx].astype(spec.dtype, copy=False)
                continue
            shape = [rows] + [d if d > 0 else seq for d in spec.shape[1:]]
            if np.issubdtype(spec.dtype, np.floating):
                feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            else:
                feed[spec.name] = np.ones(shape, dtype=spec.dtype)
        bodies.append(encode_request(feed))
    return bodies


def _batch_histogram(text: str) -> tuple[dict[float, float], float, float]:
    """(cumulative bucket counts, runs, rows) of the server's optkit_batch_size histogram in one /metrics scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "optkit_batch_size":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                edge = float(sample.labels["le"])
                buckets[edge] = buckets.get(edge, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    return buckets, count, total


def batch_distribution(before: str, after: str) -> tuple[dict[str, int], float | None]:
    """Runs per batch-size bucket between two /metrics scrapes, and the mean rows per run."""
    (a, runs_a, rows_a), (b, runs_b, rows_b) = _batch_histogram(before), _batch_histogram(after)
    dist, prev = {}, 0.0
    for edge in sorted(b):
        cum = b[edge] - a.get(edge, 0.0)
        runs, prev = cum - prev, cum
        if runs > 0 and edge != float("inf"):
            dist[f"<={int(edge)}"] = int(round(runs))
    runs = runs_b - runs_a
    return dist, ((rows_b - rows_a) / runs if runs else None)


async def _one(pool: Pool, raw: bytes, latencies: list[float], errors: dict[str, int], started: float) -> bool:
    try:
        status = await pool.request(raw)
    except Exception as exc:  # a refused or dropped connection is an error of the run, not of the client
        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        return False
    if status != 200:
        errors[str(status)] = errors.get(str(status), 0) + 1
        return False
    latencies.append(time.perf_counter() - started)
    return True


@dataclass
class _Window:
    """What one phase of load saw: latencies of answered requests, errors by kind, requests sent."""
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0


async def _closed_loop(pool: Pool, raws: list[bytes], concurrency: int, end: float, seen: _Window) -> None:
    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < end:
            seen.sent += 1
            await _one(pool, raws[i % len(raws)], seen.latencies, seen.errors, time.perf_counter())
            i += concurrency
    await asyncio.gather(*(client(k) for k in range(concurrency)))


async def _open_loop(pool: Pool, raws: list[bytes], rate: float, end: float, seen: _Window, seed: int) -> None:
    rng = random.Random(seed)
    tasks: set[asyncio.Future[bool]] = set()
    next_at = time.perf_counter()
    i = 0
    while next_at < end:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        seen.sent += 1
        task = asyncio.ensure_future(_one(pool, raws[i % len(raws)], seen.latencies, seen.errors, next_at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        next_at += rng.expovariate(rate)
    if tasks:
        await asyncio.gather(*tasks)


async def _load(base: str, model: str, bodies: list[Body], *, concurrency: int | None, rate: float | None,
                duration_s: float, warmup_s: float, seed: int = 0) -> LoadPoint:
    from optkit.serve.client import Connection, Pool, encode_http

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raws = [encode_http("POST", parts.netloc, f"/v2/models/{model}/infer", body, headers) for body, headers in bodies]
    scrape = encode_http("GET", parts.netloc, "/metrics")
    pool = Pool(host, port)

    async def metrics_text() -> str:
        conn = await Connection.open(host, port, keep_body=True)
        try:
            status, body = await conn.request(scrape)
        finally:
            conn.close()
        return body.decode() if status == 200 else ""

    async def phase(seconds: float) -> _Window:
        seen = _Window()
        end = time.perf_counter() + seconds
        work = (_open_loop(pool, raws, rate, end, seen, seed) if rate is not None
                else _closed_loop(pool, raws, concurrency or 1, end, seen))
        try:
            await asyncio.wait_for(work, seconds + ANSWER_TIMEOUT_S)
        except asyncio.TimeoutError:
            seen.errors["Timeout"] = seen.sent - len(seen.latencies) - sum(seen.errors.values())
        return seen

    try:
        if warmup_s > 0:
            await phase(warmup_s)
        before = await metrics_text()
        t0 = time.perf_counter()
        seen = await phase(duration_s)
        elapsed = time.perf_counter() - t0
        after = await metrics_text()
    finally:
        pool.close()
    dist, mean_batch = batch_distribution(before, after)
    ms = np.asarray(seen.latencies) * 1e3

    def q(p: float) -> float | None:
        return round(float(np.percentile(ms, p)), 3) if len(ms) else None

    return LoadPoint("closed" if rate is None else "open", concurrency, rate, round(elapsed, 3), seen.sent,
                     len(seen.latencies), seen.errors, round(len(seen.latencies) / elapsed, 2), q(50), q(90), q(99),
                     dist, round(mean_batch, 2) if mean_batch else None)


def run_load(base: str, model: str, bodies: list[Body], *, concurrency: int | None = None, rate: float | None = None,
             duration_s: float = 20.0, warmup_s: float = 1.0) -> LoadPoint:
    """One load point. The client runs on uvloop where it is installed (it comes with the serve extra): on a
    machine the client shares with the server, every cycle it spends is one the server does not get."""
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_load(base, model, bodies, concurrency=concurrency, rate=rate, duration_s=duration_s,
                                warmup_s=warmup_s))


def fetch_json(url: str, timeout: float = 5.0) -> dict[str, Any]:
    from urllib.request import urlopen

    with urlopen(url, timeout=timeout) as resp:  # loopback only (check_url)
        doc: dict[str, Any] = json.loads(resp.read())
    return doc
