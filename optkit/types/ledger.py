"""Typed records above the steps: a ledger row, a gate's verdict, a profile, a compared artifact and a run's report.

Each is what ``report/`` renders and ``engine/gates.py`` judges, read by attribute. ``to_json`` writes the JSON
earlier versions wrote as dicts (``--json``, ``report.json``): the same keys in the same order, so a script that
reads them, or diffs two runs' output, sees no change. ``LedgerRow`` and ``RunReport`` read that JSON back
(``optkit report DIR``).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from optkit.types.generative import GenerationMetrics
from optkit.types.records import Accuracy, CpuInfo, Fidelity, Latency, Metrics, OutputStats, Serving, StepRecord

# the ledger's headline latency, and each entry of its latency_all, in the order the ledger has always written
_HEADLINE_LATENCY = ("p50_ms", "p90_ms", "p99_ms", "throughput", "batch_size", "threads")
_LATENCY_ENTRY = ("batch_size", "threads", "p50_ms", "p90_ms", "p99_ms", "throughput", "mean_ms", "min_ms",
                  "iterations", "budget_s")
_ACCURACY = ("metric", "value", "samples", "points", "higher_is_better")  # the ledger's: no per-metric values


def ordered(record: BaseModel, keys: tuple[str, ...], *, rest: bool = True) -> dict[str, Any]:
    """``record``'s JSON with ``keys`` first, in that order (every one, set or not), then its other set keys
    (``rest``), as ``to_json`` writes them."""
    dumped = record.model_dump(mode="json", exclude_unset=True)
    out = {k: getattr(record, k, dumped.get(k)) for k in keys}
    if rest:
        out.update((k, v) for k, v in dumped.items() if k not in out)
    return out


class Row(BaseModel):
    """A record that is a row of a JSON document: every field written, unknown keys kept on reading."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class LedgerRow(Row):
    """One row of the ledger (``ledger_rows``): an artifact of the chain with what was measured,
    against its parent and the original model. ``slower``: a speed step slower than its input (flagged)."""

    index: int
    step: str
    artifact: str
    format: str
    size_bytes: int
    sha256: str
    accuracy: Accuracy | None = None
    accuracy_delta_vs_parent: float | None = None
    accuracy_delta_vs_original: float | None = None
    latency: Latency | None = None  # the row's headline figure (batch and threads of the first entry)
    latency_all: list[Latency] = []
    speedup_vs_parent: float | None = None
    speedup_vs_original: float | None = None
    fidelity: Fidelity | None = None  # vs the original model
    fidelity_vs_parent: Fidelity | None = None
    peak_memory_mb: float | None = None
    macs: int | None = None
    params: int | None = None
    wall_time_s: float | None = None
    summary: str = ""
    notes: list[str] = []
    timing: str = "step time"  # "interleaved": the run's one pass over every row; else as measured when built
    serving: Serving | None = None
    output_stats: list[OutputStats] | None = None
    slower: bool = False
    # a causal LM's row (written only then): perplexity, agreement, timing; decode tokens/s vs the parent's/original's
    generation: GenerationMetrics | None = None
    decode_speedup_vs_parent: float | None = None
    decode_speedup_vs_original: float | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"generation"})
        if self.generation is not None:
            out["generation"] = self.generation.model_dump(mode="json", exclude={"reference_tokens"})
        for key in ("decode_speedup_vs_parent", "decode_speedup_vs_original"):
            if out[key] is None:
                del out[key]
        out.update(
            accuracy=ordered(self.accuracy, _ACCURACY, rest=False) if self.accuracy else None,
            latency=ordered(self.latency, _HEADLINE_LATENCY, rest=False) if self.latency else None,
            latency_all=[_entry(e) for e in self.latency_all],
            fidelity=ordered(self.fidelity, tuple(Fidelity.model_fields), rest=False) if self.fidelity else None,
            fidelity_vs_parent=self.fidelity_vs_parent.to_json() if self.fidelity_vs_parent else None,
            serving=self.serving.to_json() if self.serving else None,
            output_stats=[o.to_json() for o in self.output_stats] if self.output_stats else None)
        if not self.slower:
            del out["slower"]
        return out


def _entry(latency: Latency) -> dict[str, Any]:
    """A latency_all entry: only the keys its record has set, in the ledger's order."""
    dumped = latency.to_json()
    return {**{k: dumped[k] for k in _LATENCY_ENTRY if k in dumped}, **dumped}


class GateResult(Row):
    """A gate judged on the ledger (``engine/gates.evaluate``): what it names, what was measured, and its verdict
    in one line. ``measured`` is None when the figure was never taken (then it fails)."""

    gate: str
    step: str
    baseline: str
    measured: float | None
    limit: float
    passed: bool
    text: str


class Profile(Row):
    """What the profile step measured of one artifact: accuracy (vs the original, as in the ledger), latency per
    batch size, size and peak memory."""

    artifact: str
    format: str
    size_bytes: int
    sha256: str
    eval_data: dict[str, Any] | None = None
    accuracy: Accuracy | None = None
    latency: list[Latency] = []
    peak_memory_mb: float | None = None
    notes: list[str] = []
    fidelity: Fidelity | None = None
    task: str | None = None


class CompareRow(Row):
    """One artifact of ``optkit compare``: accuracy, fidelity to the first artifact, latency per batch size from
    one interleaved pass, and the speed-up over the first at each."""

    artifact: str
    name: str
    format: str
    runtime: dict[str, Any] | None = None
    size_bytes: int
    accuracy: Accuracy | None = None
    fidelity_vs_first: Fidelity | None = None
    latency: list[Latency] = []
    speedup_vs_first: list[float] = []


class Environment(Row):
    """The machine and libraries a report's figures come from."""

    cpu: CpuInfo
    os: str
    python: str
    versions: dict[str, str]
    seed: int

    @property
    def cpu_model(self) -> str:
        return self.cpu.model

    @property
    def cores(self) -> int | None:
        return self.cpu.logical_cores

    @property
    def simd(self) -> list[str]:
        return list(self.cpu.simd or [])


class RunReport(Row):
    """``report.json`` of ``optkit run``: the ledger, the profiles, every gate's verdict, the environment, which
    steps came from the cache, and the error if a step failed. ``timing_measured_at`` (the ledger's figures were
    reused from that run) and ``executor`` (a parallel run's tasks) are written only when set."""

    recipe: str
    recipe_sha256: str
    status: str  # passed | gate failed | step failed
    error: str | None = None
    steps: list[LedgerRow] = []
    profiles: list[Profile] = []
    gates: list[GateResult] = []
    cached_steps: list[int] = []
    wall_time_s: float
    environment: Environment
    timing_measured_at: str | None = None
    executor: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"timing_measured_at", "executor"})
        out.update(steps=[r.to_json() for r in self.steps], profiles=[p.to_json() for p in self.profiles],
                   gates=[g.to_json() for g in self.gates])
        if self.timing_measured_at:
            out["timing_measured_at"] = self.timing_measured_at
        if self.executor:
            out["executor"] = self.executor
        return out


# ----------------------------------------------------------------------------- rows from a chain

def _acc(rec: StepRecord) -> float | None:
    acc = rec.measured.accuracy
    return acc.value if acc else None


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _speedup(lat: Latency | None, other: Metrics) -> float | None:
    if lat is None:
        return None
    base = other.latency_at(lat.batch_size, lat.threads)
    return base.p50_ms / lat.p50_ms if base and lat.p50_ms > 0 else None


def _decode_speedup(this: Metrics, other: Metrics) -> float | None:
    mine = this.generation.decode_tokens_per_s if this.generation else None
    theirs = other.generation.decode_tokens_per_s if other.generation else None
    return mine / theirs if mine and theirs else None


SLOWER_STEPS = ("quantize", "compile")  # steps whose point is speed: slower than their input is flagged

Timed = tuple[StepRecord, Metrics, str]


def with_latency(chain: list[StepRecord], latency: list[list[Latency] | None] | None) -> list[Timed]:
    """Each record with the metrics the ledger shows: latency replaced by ``latency`` (one entry list per row,
    from one interleaved pass) where given, and which timing that is."""
    out: list[Timed] = []
    for i, rec in enumerate(chain):
        lat = latency[i] if latency is not None and i < len(latency) else None
        if lat:
            out.append((rec, rec.measured.model_copy(update={"latency": list(lat)}), "interleaved"))
        else:
            out.append((rec, rec.measured, "step time"))
    return out


def ledger_rows(chain: list[StepRecord], latency: list[list[Latency] | None] | None = None) -> list[LedgerRow]:
    """Ledger rows from the original model to the last artifact. ``latency``: the run's interleaved timing of every
    row (``RunResult.ledger_latency``); without it, each row's step-time figures."""
    timed = with_latency(chain, latency)
    return [_row(i, timed[i], timed[i - 1] if i else None, timed[0]) for i in range(len(timed))]


def _row(index: int, this: Timed, parent: Timed | None, original: Timed) -> LedgerRow:
    rec, metrics, timing = this
    lat = metrics.latency_at()
    row = LedgerRow(
        index=index, step=rec.step, artifact=rec.artifact, format=rec.format, size_bytes=rec.size_bytes,
        sha256=rec.sha256, accuracy=metrics.accuracy,
        accuracy_delta_vs_parent=_delta(_acc(rec), _acc(parent[0])) if parent else None,
        accuracy_delta_vs_original=_delta(_acc(rec), _acc(original[0])),
        latency=lat, latency_all=list(metrics.latency or []),
        speedup_vs_parent=_speedup(lat, parent[1]) if parent else None,
        speedup_vs_original=_speedup(lat, original[1]),
        fidelity=metrics.fidelity, fidelity_vs_parent=metrics.fidelity_parent, peak_memory_mb=metrics.peak_memory_mb,
        macs=metrics.macs, params=metrics.params, wall_time_s=rec.wall_time_s, summary=rec.summary,
        notes=list(rec.notes), timing=timing, serving=metrics.serving, output_stats=metrics.output_stats or None)
    if metrics.generation is not None:  # a causal LM is as fast as it decodes: SLOWER judges decode tokens/s
        row.generation = metrics.generation
        row.decode_speedup_vs_parent = _decode_speedup(metrics, parent[1]) if parent else None
        row.decode_speedup_vs_original = _decode_speedup(metrics, original[1])
        speedup, how = row.decode_speedup_vs_parent, "decode tokens/s at batch 1, measured at step time"
    else:
        speedup = row.speedup_vs_parent
        how = "p50, measured " + ("interleaved" if timing == "interleaved" and parent and parent[2] == "interleaved"
                                  else "at step time")
    if parent and rec.step in SLOWER_STEPS and speedup is not None and speedup < 1.0:
        row.slower = True
        row.notes.append(f"SLOWER than its input: {speedup:.2f}x its speed ({how})")
    return row
