"""Measure an artifact: task accuracy on the evaluation data, latency, peak memory.

Every figure optkit prints comes from here, for every backend, so rows of a ledger compare like
with like: the same samples, the same batches, the same timing method (see ``timing.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from optkit.backends import Runner, open_runner, runner_class
from optkit.types.artifact import Artifact
from optkit.eval.data import EvalData
from optkit.eval.memory import PeakMemory, check_batch_memory
from optkit.eval.task_metric import Metric
from optkit.eval.timing import measure_interleaved, measure_latency, one_core
from optkit.types.records import Accuracy, Latency


@dataclass(frozen=True)
class MeasureSettings:
    batch_sizes: tuple[int, ...] = (1,)
    threads: int = 1
    budget_s: float = 1.0
    eval_batch_size: int = 32
    enabled: bool = True
    metric: Metric | None = None  # the task metric every row and every accuracy budget is judged on


@dataclass
class Measurement:
    """What ``measure`` took of one artifact; ``outputs``: every sample's outputs (for fidelity and statistics)."""

    accuracy: Accuracy | None
    latency: list[Latency]
    peak_memory_mb: float | None
    outputs: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)


def usable_threads(threads: int, warn) -> int:
    """``threads`` capped at the CPU count (more only adds contention and noise); ``warn`` says so."""
    import os

    cores = os.cpu_count() or 1
    if threads > cores:
        warn(f"--threads {threads} is more than this machine's {cores} CPUs: using {cores}")
        return cores
    return threads


def static_batch(artifact: Artifact) -> int | None:
    dims = [i.shape[0] for i in artifact.inputs if i.shape]
    return dims[0] if dims and isinstance(dims[0], int) else None


def run_on_data(runner: Runner, data: EvalData, batch_size: int) -> dict[str, np.ndarray]:
    """Outputs for every sample, in order (the padded tail of the last batch is dropped)."""
    chunks: dict[str, list[np.ndarray]] = {}
    for feed, real in data.batches(batch_size):
        for name, value in runner.infer(feed).items():
            chunks.setdefault(name, []).append(value[:real])
    return {k: np.concatenate(v) for k, v in chunks.items()}


def outputs_on_data(artifact: Artifact, data: EvalData, settings: MeasureSettings) -> dict[str, np.ndarray]:
    with open_runner(artifact, settings.threads) as runner:
        return run_on_data(runner, data, static_batch(artifact) or settings.eval_batch_size)


def metric_of(outputs: dict[str, np.ndarray], data: EvalData, metric: Metric | None,
              reference: dict[str, np.ndarray] | None) -> Accuracy | None:
    """The task metric of ``outputs`` on ``data`` (``reference``: the outputs a reference metric compares with)."""
    if metric is None or not outputs:
        return None
    return metric.evaluate(outputs, data.inputs, data.labels, reference)


def cycling(runner: Runner, feeds: list[dict[str, np.ndarray]]):
    """A timed call: ``runner`` on the next of ``feeds`` (each model walks the same feeds in the same order)."""
    if len(feeds) == 1:
        feed = feeds[0]
        return lambda: runner.infer(feed)
    state = {"i": 0}

    def call():
        feed = feeds[state["i"] % len(feeds)]
        state["i"] += 1
        return runner.infer(feed)

    return call


def measure(artifact: Artifact, data: EvalData, settings: MeasureSettings,
            batch_sizes: tuple[int, ...] | None = None, reference: dict[str, np.ndarray] | None = None,
            self_reference: bool = False, judge_outputs: Callable[[dict[str, np.ndarray]], None] | None = None
            ) -> Measurement:
    """``reference``: the original model's outputs (reference metrics); ``self_reference``: this is the original;
    ``judge_outputs``: called with the outputs before anything is timed (it raises to refuse degenerate ones)."""
    fixed = static_batch(artifact)
    notes: list[str] = []
    latency: list[Latency] = []
    runner_class(artifact.format).preload()
    with PeakMemory() as mem, one_core(settings.threads):
        with open_runner(artifact, settings.threads) as runner:
            outputs = run_on_data(runner, data, fixed or settings.eval_batch_size)
            if judge_outputs is not None:
                judge_outputs(outputs)
            ran = fixed or settings.eval_batch_size
            for bs in batch_sizes or settings.batch_sizes:
                if fixed and bs != fixed:
                    notes.append(f"batch size {bs} skipped: the model's batch dimension is fixed at {fixed}")
                    continue
                check_memory([runner], data, bs, f"timing the {artifact.format} model", ran, outputs)
                ran = max(ran, bs)
                stats = measure_latency(cycling(runner, data.timing_feeds(bs, [artifact.inputs])), batch_size=bs,
                                        threads=settings.threads, budget_s=settings.budget_s)
                latency.append(stats)
    accuracy = metric_of(outputs, data, settings.metric, outputs if self_reference else reference)
    return Measurement(accuracy=accuracy, latency=latency,
                       peak_memory_mb=mem.peak_mb, outputs=outputs, notes=notes)


def check_memory(runners: list[Runner], data: EvalData, batch: int, what: str, ran: int,
                 outputs: dict[str, np.ndarray] | None = None) -> None:
    """Before timing at ``batch``: refuse one whose memory would pass a safe share of the available memory (its
    peak estimated from smaller batches, see ``memory.check_batch_memory``) rather than meet the OOM killer."""
    io_bytes = sum(v[:1].nbytes for v in data.inputs.values()) + \
        sum(v[:1].nbytes for v in (outputs or {}).values()) * len(runners)

    def run_at(size: int) -> None:
        feed = data.batch(size)
        for runner in runners:
            runner.infer(feed)

    check_batch_memory(run_at, batch, what, ran=ran, io_bytes=io_bytes)


def quick_p50s(artifacts: list[Artifact], data: EvalData, settings: MeasureSettings, budget_s: float = 0.5) -> list[float]:
    """Batch-1 (or the fixed batch's) p50 of several artifacts timed side by side with a short budget: for steps that choose by speed
    (the choice then holds on a busy machine)."""
    import dataclasses

    # a choice is not made on less than 0.25 s of timing each, whatever the run's budget (0.05 s decides noise);
    # a model with a fixed batch dimension is timed at that batch (batch 1 would be skipped), and so are the
    # others, which take any batch (a .tflite converted at batch 8 beside its torch model)
    batch = next((b for b in map(static_batch, artifacts) if b), 1)
    quick = dataclasses.replace(settings, batch_sizes=(batch,), budget_s=max(0.25, min(settings.budget_s, budget_s)))
    return [lat[0].p50_ms for lat in measure_side_by_side(artifacts, data, quick)]


def measure_side_by_side(artifacts: list[Artifact], data: EvalData, settings: MeasureSettings,
                         on_batch=None) -> list[list[Latency]]:
    """Latency of several artifacts in one interleaved round-robin pass per batch size, so the load of
    the machine at that moment hits every one alike (compare's method; a ledger's latency columns).

    Returns one list of latency entries per artifact; an artifact with a fixed batch dimension is timed
    only at that batch size."""
    with one_core(settings.threads):  # every runner (and the threads it starts) on one core
        return _side_by_side(artifacts, data, settings, on_batch)


def _side_by_side(artifacts: list[Artifact], data: EvalData, settings: MeasureSettings,
                  on_batch) -> list[list[Latency]]:
    runners: list[Runner] = []
    try:
        for art in artifacts:
            runner_class(art.format).preload()
            runners.append(open_runner(art, settings.threads))
        result: list[list[Latency]] = [[] for _ in artifacts]
        ran = 0
        for bs in settings.batch_sizes:
            idx = [i for i, art in enumerate(artifacts) if static_batch(art) in (None, bs)]
            if not idx:
                continue
            if all(static_batch(artifacts[i]) is None for i in idx):
                check_memory([runners[i] for i in idx], data, bs, f"timing {len(idx)} models side by side", ran)
                ran = max(ran, bs)
            if on_batch is not None:
                on_batch(bs, len(idx))
            feeds = data.timing_feeds(bs, [artifacts[i].inputs for i in idx])
            stats = measure_interleaved([cycling(runners[i], feeds) for i in idx], batch_size=bs,
                                        threads=settings.threads, budget_s=settings.budget_s)
            for i, st in zip(idx, stats):
                result[i].append(st)
        return result
    finally:
        for runner in runners:
            runner.close()
