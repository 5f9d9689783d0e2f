"""``report.json`` of ``optkit optimize``, as a record: the winner, every candidate with its verdicts and timing, the
skipped ones, the time budget, the machine.

``report/optimize.py`` builds it from the search and renders it; ``optkit report DIR`` reads it back. ``to_json``
writes the keys earlier versions wrote in the same order; keys a later version adds are kept on reading
(``extra="allow"``), and a report of an earlier version, without the keys added since (``timing_reserve_s``,
``second_pass_skipped``), reads with their defaults.
"""
from __future__ import annotations

from typing import Any

from optkit.types.ledger import Environment, Row
from optkit.types.records import Accuracy

# a candidate's metric as its sidecar record wrote it before Accuracy's fields took the task metric's order
_METRIC = ("metric", "value", "samples", "points", "higher_is_better")


class Candidate(Row):
    """One candidate recipe: what it is, what became of it (built, rejected, stopped, skipped) and why, its drop
    and cosine vs the original, and its figures from the interleaved timing pass."""

    name: str
    target: str
    precision: str
    what: str
    status: str
    why: str | None = None
    steps: list[dict[str, Any]] = []
    artifact: str | None = None
    metric: Accuracy | None = None
    drop_vs_original: float | None = None
    cosine_vs_original: float | None = None
    calibration_drop: float | None = None
    verdicts: list[dict[str, Any]] = []
    p50_ms: float | None = None
    p90_ms: float | None = None
    speedup_vs_fp32: float | None = None
    speedup_vs_original: float | None = None
    timing_pass: int | None = None
    size_bytes: int | None = None
    seconds: float = 0.0
    cached: bool = False

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.metric is not None:
            dumped = self.metric.to_json()
            out["metric"] = {**{k: dumped[k] for k in _METRIC if k in dumped}, **dumped}
        return out


class Skipped(Row):
    name: str
    why: str


class Fp32(Row):
    """The fp32 ONNX model every candidate is timed against."""

    artifact: str
    p50_ms: float | None = None
    p90_ms: float | None = None


class Original(Row):
    """MODEL as given: the same as the fp32 model, or a PyTorch model timed in the same pass (or why it was not)."""

    artifact: str
    format: str
    same_as_fp32: bool
    p50_ms: float | None = None
    p90_ms: float | None = None
    not_timed: str | None = None


class Best(Row):
    """The winner's copy in the folder, the recipe that rebuilds it, and where optimize ran that recipe."""

    artifact: str
    recipe: str
    run: str | None = None
    sha256: str


class OptimizeReport(Row):
    model: str
    status: str  # passed | no candidate within budget
    winner: str | None = None
    budget: dict[str, float | None]  # max_drop, min_cosine
    batch_size: int
    threads: int
    timing: str  # how the candidates were timed, in words
    timing_reused_from: str | None = None
    judged_on: str
    calibration_samples: int | None = None
    fp32: Fp32
    original: Original | None = None
    candidates: list[Candidate]
    skipped: list[Skipped] = []
    facts: dict[str, Any] = {}
    time_budget_s: float
    timing_reserve_s: float = 0.0
    second_pass_skipped: bool = False
    build_time_s: float
    wall_time_s: float
    environment: Environment
    executor: str = "local"
    measured_on: list[str] = []
    timeline: list[dict[str, Any]] = []
    best: Best | None = None  # written only when there is a winner

    def candidate(self, name: str | None) -> Candidate | None:
        return next((c for c in self.candidates if c.name == name), None) if name else None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["candidates"] = [c.to_json() for c in self.candidates]
        if self.best is None:
            del out["best"]
        return out
