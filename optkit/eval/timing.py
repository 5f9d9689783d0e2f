"""One timing method for every backend.

For each (artifact, batch size, threads): the input batch is prepared once (numpy arrays from the
evaluation data); one untimed call absorbs lazy initialisation; warm-up calls run for 20% of the
budget (at least 3); then timed calls run until the budget is spent (at least ``min_iters``, at
most ``max_iters``), each timed alone with ``perf_counter_ns`` around the backend's ``infer`` call
(numpy in, numpy out), with Python's garbage collector paused. Reported: p50/p90/p99/mean/min in
milliseconds and throughput = samples / total timed seconds.
"""
from __future__ import annotations

import contextlib
import gc
import os
import time
from typing import Any, Callable, Iterator

import numpy as np

from optkit.types.records import Latency


def _latency(samples_ns: list[int], *, batch_size: int, threads: int, budget_s: float) -> Latency:
    """The figures of one model's timed calls (their durations in nanoseconds)."""
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return Latency(
        batch_size=batch_size, threads=threads,
        p50_ms=float(np.percentile(ms, 50)), p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()), min_ms=float(ms.min()),
        throughput=float(batch_size * len(ms) / (ms.sum() / 1e3)), iterations=len(ms), budget_s=budget_s,
    )


def measure_latency(fn: Callable[[], Any], *, batch_size: int, threads: int, budget_s: float,
                    min_iters: int = 5, max_iters: int = 100_000) -> Latency:
    fn()  # first call: lazy allocations, kernel selection
    warm_deadline = time.perf_counter() + 0.2 * budget_s
    warm = 0
    while warm < 3 or time.perf_counter() < warm_deadline:
        fn()
        warm += 1
    samples: list[int] = []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        deadline = time.perf_counter_ns() + int(0.8 * budget_s * 1e9)
        while len(samples) < max_iters:
            start = time.perf_counter_ns()
            fn()
            end = time.perf_counter_ns()
            samples.append(end - start)
            if end >= deadline and len(samples) >= min_iters:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return _latency(samples, batch_size=batch_size, threads=threads, budget_s=budget_s)


def measure_interleaved(fns: list[Callable[[], Any]], *, batch_size: int, threads: int, budget_s: float,
                        slice_s: float = 0.05) -> list[Latency]:
    """The same method for several models at once, round-robin, so machine noise hits all alike.

    Each round gives every function a slice of ``slice_s`` seconds (at least one call); rounds run
    until each has had ``budget_s`` of timed calls. Warm-up as in ``measure_latency``.
    """
    for fn in fns:
        fn()
        for _ in range(3):
            fn()
    samples: list[list[int]] = [[] for _ in fns]
    spent = [0 for _ in fns]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        while min(spent) < budget_s * 1e9:
            for i, fn in enumerate(fns):
                slice_end = time.perf_counter_ns() + int(slice_s * 1e9)
                while True:
                    start = time.perf_counter_ns()
                    fn()
                    end = time.perf_counter_ns()
                    samples[i].append(end - start)
                    spent[i] += end - start
                    if end >= slice_end:
                        break
    finally:
        if gc_was_enabled:
            gc.enable()
    return [_latency(s, batch_size=batch_size, threads=threads, budget_s=budget_s) for s in samples]


def _current_core() -> int | None:
    """The CPU this thread runs on now (field 39 of /proc/thread-self/stat), or None where unknown."""
    try:
        with open("/proc/thread-self/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[36])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def one_core(threads: int) -> Iterator[int | None]:
    """With one thread, everything timed runs on one core: the calling thread is pinned to the core it runs on,
    and the threads a runtime starts meanwhile inherit it (OpenVINO runs requests on a worker thread of its own).
    Without this, two runners of one model timed in one pass differed 1.8x here, as OpenVINO's worker landed on
    one core or the other of a VM whose two vCPUs were not equally fast (0.36 vs 0.67-0.99 ms for one model).
    The previous affinity is restored after."""
    if threads != 1 or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = sorted(os.sched_getaffinity(0))
    core = _current_core()
    core = core if core in allowed else allowed[0]
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, allowed)
