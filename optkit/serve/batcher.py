"""The dynamic batcher: requests queue, merge into one run, and split back - Triton's dynamic batcher, in asyncio.

A request waits until its group (same non-batch shape and dtypes; token inputs of any length where padding is
allowed) holds ``max_batch`` rows or a preferred batch size, or until the oldest request has waited ``max_delay_s``;
then one instance runs the merged batch in its own worker thread (the event loop never blocks on inference) and
every request gets its rows back.

Two policies decide how long a batch waits below ``max_batch``. ``delay`` is Triton's: up to ``max_delay_s``, always.
``adaptive`` (the default) waits only while more requests are on their way in - the server has started reading
them (``expect``) but they have not reached the queue yet - and fires as soon as none is, ``max_delay_s`` still the
bound. A free instance so never idles on a timer while its batch could run: under load, requests pile up while the
instance is busy and the batches grow by themselves, and inference overlaps the event loop's HTTP work instead of
alternating with it. The queue is bounded in
requests (``QueueFull`` beyond it, answered 503); a request larger than ``max_batch`` runs alone. An artifact with
a fixed batch dimension B > 1 is padded up to B; with B = 1 requests run one row at a time.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


class QueueFull(RuntimeError):
    pass


class Stopping(RuntimeError):
    pass


@dataclass(eq=False)  # compared by identity: the queue holds numpy arrays
class _Pending:
    feed: dict[str, np.ndarray]
    rows: int
    key: tuple
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


def group_key(feed: dict[str, np.ndarray], padded: frozenset[str] = frozenset()) -> tuple:
    """What must agree for requests to share a batch: dtypes and non-batch dims (axis 1 aside for padded inputs)."""
    return tuple((n, a.dtype.str, a.shape[2:] if n in padded else a.shape[1:]) for n, a in sorted(feed.items()))


def pad_to(arr: np.ndarray, length: int) -> np.ndarray:
    """Right-pad axis 1 with zeros (token id 0, attention mask 0) up to ``length``."""
    if arr.shape[1] == length:
        return arr
    widths = [(0, 0)] * arr.ndim
    widths[1] = (0, length - arr.shape[1])
    return np.pad(arr, widths)


@dataclass
class BatchStats:
    """What the batcher observed; ``on_batch(rows, queue_s_list, infer_s)`` feeds the metrics."""
    batches: int = 0
    rows: int = 0


POLICIES = ("adaptive", "delay")


class Batcher:
    def __init__(self, runners: list[Any], *, max_batch: int, max_delay_s: float, max_queue: int,
                 policy: str = "adaptive", preferred: tuple[int, ...] = (), fixed_batch: int | None = None,
                 padded: frozenset[str] = frozenset(), sequence_outputs: frozenset[str] = frozenset(),
                 on_batch: Callable[[int, list[float], float], None] | None = None) -> None:
        """``padded``: inputs whose axis 1 (the sequence) may differ between requests of one batch: right-padded with
        zeros, for token models whose attention mask makes the padding invisible. ``sequence_outputs``: outputs
        whose axis 1 is that sequence, cut back to each request's own length."""
        if policy not in POLICIES:
            raise ValueError(f"batching policy {policy!r}: one of {', '.join(POLICIES)}")
        self.runners = runners
        self.policy = policy
        self.fixed_batch = fixed_batch
        self.max_batch = 1 if fixed_batch == 1 else (min(max_batch, fixed_batch) if fixed_batch else max_batch)
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self.preferred = tuple(sorted(p for p in preferred if 1 <= p <= self.max_batch))
        self.on_batch = on_batch
        self.padded = padded
        self.sequence_outputs = sequence_outputs
        self.stats = BatchStats()
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self.incoming = 0  # requests the server is reading that will reach the queue (expect / withdraw)
        self._stopping = False
        self._workers: list[asyncio.Task] = []
        self._pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"optkit-infer-{i}")
                       for i in range(len(runners))]

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._worker(i)) for i in range(len(self.runners))]

    def expect(self) -> None:
        """A request is on its way in: an adaptive batch waits for it (bounded by the queue delay)."""
        self.incoming += 1

    def withdraw(self) -> None:
        """An expected request will not reach the queue (a bad request, a cache hit)."""
        self.incoming -= 1
        self._arrived.set()

    async def submit(self, feed: dict[str, np.ndarray], expected: bool = False) -> dict[str, np.ndarray]:
        """Queue ``feed`` and wait for its rows; ``expected``: this request was announced with ``expect()``."""
        if expected:
            self.incoming -= 1
            self._arrived.set()  # runs after this call has queued the request (or refused it)
        if self._stopping:
            raise Stopping("the server is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
        rows = int(next(iter(feed.values())).shape[0])
        if self.fixed_batch and rows > self.fixed_batch:
            raise ValueError(f"{rows} rows in one request; this artifact takes at most {self.fixed_batch}")
        pending = _Pending(feed, rows, group_key(feed, self.padded), asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._arrived.set()
        return await pending.future

    async def stop(self) -> None:
        """Run what is queued, then end the workers and their threads."""
        self._stopping = True
        self._arrived.set()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        for pool in self._pools:
            pool.shutdown(wait=True)

    # -- workers ---------------------------------------------------------------------------------------------
    def _ready_rows(self, key: tuple) -> int:
        return sum(p.rows for p in self._queue if p.key == key)

    def _full(self, rows: int) -> bool:
        return rows >= self.max_batch or (bool(self.preferred) and rows >= self.preferred[-1])

    def _take(self, key: tuple) -> list[_Pending]:
        """The oldest request and the next ones of its group, FIFO, up to max_batch rows (a preferred size if one
        fits what is waiting)."""
        rows_ready = self._ready_rows(key)
        limit = self.max_batch
        fitting = [p for p in self.preferred if p <= rows_ready]
        if fitting:
            limit = fitting[-1]
        taken, rows = [], 0
        for p in list(self._queue):
            if p.key != key:
                continue
            if taken and rows + p.rows > limit:
                break
            taken.append(p)
            rows += p.rows
            self._queue.remove(p)
        return taken

    def _due(self, first: _Pending) -> bool:
        """Whether the batch headed by ``first`` should run now, without waiting any longer."""
        return (self._stopping or self._full(self._ready_rows(first.key))
                or time.perf_counter() >= first.enqueued + self.max_delay_s
                or (self.policy == "adaptive" and self.incoming <= 0))

    async def _next_batch(self) -> list[_Pending] | None:
        """Wait for a batch by the policy; None when the batcher is stopping and nothing is left."""
        while True:
            while not self._queue:
                if self._stopping:
                    return None
                self._arrived.clear()
                await self._arrived.wait()
            first = self._queue[0]
            deadline = first.enqueued + self.max_delay_s
            while True:
                if self.policy == "adaptive":
                    await asyncio.sleep(0)  # requests the loop has already read enqueue first
                if self._due(first):
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), deadline - time.perf_counter())
                except asyncio.TimeoutError:
                    break
            if any(p is first for p in self._queue):  # else another instance took it meanwhile
                batch = self._take(first.key)
                if batch:
                    return batch

    async def _worker(self, index: int) -> None:
        """Run batches on instance ``index``. When a run ends and the next batch is already due (requests piled up
        while the instance was busy), it starts before this run's requests are answered: the instance does not
        wait for the event loop to write replies."""
        loop = asyncio.get_running_loop()
        running = None
        while True:
            if running is None:
                batch = await self._next_batch()
                if batch is None:
                    return
                running = self._launch(index, batch, loop)
            batch, lengths, started, future = running
            try:
                out, error = await future, None
            except Exception as exc:  # the runtime refused this batch: every request in it gets the error
                out, error = None, exc
            running = None
            if self._queue and self._due(self._queue[0]):
                following = self._take(self._queue[0].key)
                if following:
                    running = self._launch(index, following, loop)
            self._answer(batch, lengths, started, out, error)

    def _launch(self, index: int, batch: list[_Pending], loop) -> tuple:
        """Merge ``batch`` into one feed and start it on instance ``index``'s thread."""
        started = time.perf_counter()
        lengths = [max((p.feed[n].shape[1] for n in self.padded if n in p.feed), default=0) for p in batch]
        longest = max(lengths)
        feed = {n: np.concatenate([pad_to(p.feed[n], longest) if n in self.padded else p.feed[n] for p in batch])
                if len(batch) > 1 else np.array(batch[0].feed[n]) for n in batch[0].feed}
        rows = sum(p.rows for p in batch)
        pad = (self.fixed_batch - rows) if self.fixed_batch and rows < self.fixed_batch else 0
        if pad:
            feed = {n: np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for n, a in feed.items()}
        return batch, lengths, started, loop.run_in_executor(self._pools[index], self.runners[index].infer, feed)

    def _answer(self, batch: list[_Pending], lengths: list[int], started: float, out, error) -> None:
        """Every request of a finished run gets its rows (or the run's error)."""
        if error is not None:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(error)
            return
        infer_s = time.perf_counter() - started
        rows = sum(p.rows for p in batch)
        self.stats.batches += 1
        self.stats.rows += rows
        if self.on_batch is not None:
            self.on_batch(rows, [started - p.enqueued for p in batch], infer_s)
        longest, start = max(lengths), 0
        for p, length in zip(batch, lengths):
            part = {n: v[start:start + p.rows, :length] if n in self.sequence_outputs and length < longest
                    else v[start:start + p.rows] for n, v in out.items()}
            start += p.rows
            if not p.future.done():  # a client that went away does not stop the others
                p.future.set_result(part)
