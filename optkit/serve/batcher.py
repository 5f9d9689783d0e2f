"""The dynamic batcher: requests queue, merge into one run, and split back - Triton's dynamic batcher.

A request waits until its group (same non-batch shape and dtypes; token inputs of any length where padding is
allowed) holds ``max_batch`` rows or a preferred batch size, or until the oldest request has waited ``max_delay_s``;
then one instance runs the merged batch and every request gets its rows back.

Each instance is a thread of its own that forms its batches itself: the event loop only reads requests into a
thread-safe queue and writes replies, the instance takes its next batch from that queue the moment a run ends - it
never waits for the event loop to notice the run ended (one loop-to-thread handoff per request, none per run) - and
merges, runs and splits off the loop. A finished batch reaches the loop as one callback that answers all its requests.

Two policies decide how long a batch waits below ``max_batch``. ``delay`` is Triton's: up to ``max_delay_s``, always.
``adaptive`` (the default) waits only while more requests are on their way in - the server has started reading
them (``expect``) but they have not reached the queue yet - and fires as soon as none is, ``max_delay_s`` still the
bound. A free instance so never idles on a timer while its batch could run: under load, requests pile up while the
instance is busy and the batches grow by themselves. The queue is bounded in requests (``QueueFull`` beyond it,
answered 503); a request larger than ``max_batch`` runs alone. An artifact with a fixed batch dimension B > 1 is
padded up to B; with B = 1 requests run one row at a time.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from optkit.types.serve_config import POLICIES, ServeConfig


class QueueFull(RuntimeError):
    pass


class Stopping(RuntimeError):
    pass


Feed = dict[str, np.ndarray]  # tensors by name: a request's inputs, or its rows of the outputs


@dataclass(eq=False)  # compared by identity: the queue holds numpy arrays
class _Pending:
    feed: Feed
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[Feed]
    enqueued: float = field(default_factory=time.perf_counter)


def group_key(feed: Feed, padded: frozenset[str] = frozenset()) -> tuple[Any, ...]:
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


class Batcher:
    def __init__(self, runners: list[Any], *, max_batch: int, max_delay_s: float, max_queue: int,
                 policy: str = "adaptive", preferred: tuple[int, ...] = (), fixed_batch: int | None = None,
                 padded: frozenset[str] = frozenset(), sequence_outputs: frozenset[str] = frozenset(),
                 on_batch: Callable[[int, list[float], float], None] | None = None) -> None:
        """``padded``: inputs whose axis 1 (the sequence) may differ between requests of one batch: right-padded with
        zeros, for token models whose attention mask makes the padding invisible. ``sequence_outputs``: outputs
        whose axis 1 is that sequence, cut back to each request's own length. ``on_batch`` runs on the event loop."""
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
        # Shared with the instance threads, under _cond: the queue and _stopping. ``incoming`` is written by the
        # event loop only; a change the instances must see is followed by a notify under the lock.
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self.incoming = 0  # requests the server is reading that will reach the queue (expect / withdraw)
        self._stopping = False
        self._kick_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._ended: list[asyncio.Future[None]] = []

    @classmethod
    def configured(cls, runners: list[Any], config: ServeConfig, *, fixed_batch: int | None = None,
                   padded: frozenset[str] = frozenset(), sequence_outputs: frozenset[str] = frozenset(),
                   on_batch: Callable[[int, list[float], float], None] | None = None) -> Batcher:
        """The batcher ``config`` describes, over the model's facts (its fixed batch, its padded inputs)."""
        return cls(runners, max_batch=config.max_batch, max_delay_s=config.max_queue_delay_s,
                   max_queue=config.max_queue, policy=config.batch_policy, preferred=tuple(config.preferred_batch),
                   fixed_batch=fixed_batch, padded=padded, sequence_outputs=sequence_outputs, on_batch=on_batch)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        """Start one thread per instance; call from the event loop that will submit."""
        self._loop = asyncio.get_running_loop()
        self._ended = [self._loop.create_future() for _ in self.runners]
        self._threads = [threading.Thread(target=self._instance, args=(i,), name=f"optkit-infer-{i}", daemon=True)
                         for i in range(len(self.runners))]
        for thread in self._threads:
            thread.start()

    def expect(self) -> None:
        """A request is on its way in: an adaptive batch waits for it (bounded by the queue delay)."""
        self.incoming += 1

    def withdraw(self) -> None:
        """An expected request will not reach the queue (a bad request, a cache hit)."""
        self.incoming -= 1
        self._kick_soon()

    async def submit(self, feed: Feed, expected: bool = False) -> Feed:
        """Queue ``feed`` and wait for its rows; ``expected``: this request was announced with ``expect()``."""
        if expected:
            self.incoming -= 1
            self._kick_soon()
        if self._stopping:
            raise Stopping("the server is shutting down")
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"the queue is full ({self.max_queue} requests waiting)")
        rows = int(next(iter(feed.values())).shape[0])
        if self.fixed_batch and rows > self.fixed_batch:
            raise ValueError(f"{rows} rows in one request; this artifact takes at most {self.fixed_batch}")
        pending = _Pending(feed, rows, group_key(feed, self.padded), asyncio.get_running_loop().create_future())
        with self._cond:
            self._queue.append(pending)
        self._kick_soon()
        return await pending.future

    def _started_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the batcher has not been started")
        return self._loop

    def _kick_soon(self) -> None:
        """Wake the instances at the end of this pass of the event loop, not at once: the requests the loop has
        already read join the queue first (one wake-up for all of them; the same pass answers them in one batch)."""
        if not self._kick_pending:
            self._kick_pending = True
            self._started_loop().call_soon(self._kick)

    def _kick(self) -> None:
        self._kick_pending = False
        with self._cond:
            self._cond.notify_all()

    async def stop(self) -> None:
        """Run what is queued, then end the instance threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._ended:
            await asyncio.gather(*self._ended)
        for thread in self._threads:
            thread.join()

    # -- the instance threads: the queue is read under _cond only --------------------------------------------
    def _ready_rows(self, key: tuple[Any, ...]) -> int:
        return sum(p.rows for p in self._queue if p.key == key)

    def _full(self, rows: int) -> bool:
        return rows >= self.max_batch or (bool(self.preferred) and rows >= self.preferred[-1])

    def _take(self, key: tuple[Any, ...]) -> list[_Pending]:
        """The oldest request and the next ones of its group, FIFO, up to max_batch rows (a preferred size if one
        fits what is waiting)."""
        rows_ready = self._ready_rows(key)
        limit = self.max_batch
        fitting = [p for p in self.preferred if p <= rows_ready]
        if fitting:
            limit = fitting[-1]
        taken: list[_Pending] = []
        rows = 0
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

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for a batch by the policy; None when the batcher is stopping and nothing is left."""
        with self._cond:
            while True:
                if not self._queue:
                    if self._stopping:
                        return None
                    self._cond.wait()
                    continue
                first = self._queue[0]
                if self._due(first):
                    return self._take(first.key)
                self._cond.wait(max(0.0, first.enqueued + self.max_delay_s - time.perf_counter()))

    def _instance(self, index: int) -> None:
        """Instance ``index``'s thread: take a batch, merge, run, split, hand the parts to the loop; again."""
        runner, loop = self.runners[index], self._started_loop()
        try:
            while True:
                batch = self._next_batch()
                if batch is None:
                    return
                started = time.perf_counter()
                outcome: list[Feed] | Exception
                try:
                    outcome = self._split(batch, *self._run(runner, batch))
                except Exception as exc:  # the runtime refused this batch: every request in it gets the error
                    outcome = exc
                loop.call_soon_threadsafe(self._answer, batch, started, time.perf_counter() - started, outcome)
        finally:
            loop.call_soon_threadsafe(self._ended[index].set_result, None)

    def _run(self, runner: Any, batch: list[_Pending]) -> tuple[list[int], Feed]:
        """Merge ``batch`` into one feed (padded where allowed) and run it: (each request's length, outputs)."""
        lengths = [max((p.feed[n].shape[1] for n in self.padded if n in p.feed), default=0) for p in batch]
        longest = max(lengths)
        feed = {n: np.concatenate([pad_to(p.feed[n], longest) if n in self.padded else p.feed[n] for p in batch])
                if len(batch) > 1 else np.array(batch[0].feed[n]) for n in batch[0].feed}
        rows = sum(p.rows for p in batch)
        pad = (self.fixed_batch - rows) if self.fixed_batch and rows < self.fixed_batch else 0
        if pad:
            feed = {n: np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) for n, a in feed.items()}
        return lengths, runner.infer(feed)

    def _split(self, batch: list[_Pending], lengths: list[int], out: Feed) -> list[Feed]:
        """Each request's rows of ``out`` (sequence outputs cut back to its own length)."""
        longest, start = max(lengths), 0
        parts: list[Feed] = []
        for p, length in zip(batch, lengths):
            parts.append({n: v[start:start + p.rows, :length] if n in self.sequence_outputs and length < longest
                          else v[start:start + p.rows] for n, v in out.items()})
            start += p.rows
        return parts

    # -- back on the event loop --------------------------------------------------------------------------------
    def _answer(self, batch: list[_Pending], started: float, infer_s: float, outcome: list[Feed] | Exception) -> None:
        """Every request of a finished run gets its rows (or the run's error)."""
        if isinstance(outcome, Exception):
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(outcome)
            return
        rows = sum(p.rows for p in batch)
        self.stats.batches += 1
        self.stats.rows += rows
        if self.on_batch is not None:
            self.on_batch(rows, [started - p.enqueued for p in batch], infer_s)
        for p, part in zip(batch, outcome):
            if not p.future.done():  # a client that went away does not stop the others
                p.future.set_result(part)
