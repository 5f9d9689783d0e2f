"""The records of one ``optkit optimize`` search, apart from the code that fills them, so that the search, the judge
and the timing pass all read and write the same types without importing each other: what the command asked for
(``OptimizeRun``), the recipe keys every candidate shares (``CandidateSettings``), a build's answer
(``BuildOutcome``), a split's verdict, a candidate's outcome and the whole search."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.optimize.space import TARGETS, Budget, CandidateRecipe, ModelFacts, Skipped
from optkit.types.artifact import Artifact
from optkit.types.records import StepRecord
from optkit.types.ui import UI

if TYPE_CHECKING:
    from optkit.engine.executor import Executor, TaskRun

CANDIDATE_TIMING_S = 0.1  # per row while a candidate is built: the ranking comes from the final interleaved pass


@dataclass
class OptimizeRun:
    """What ``optkit optimize`` was asked: the model, the output folder, the targets and the budgets, the data, and
    where the builds run. Paths are absolute (they are written into best.yaml)."""

    model: str
    out_dir: Path
    ui: UI
    targets: tuple[str, ...] = TARGETS
    metric: str | None = None
    budget: Budget = field(default_factory=Budget)
    batch_size: int = 1
    time_budget_s: float = 600.0
    threads: int = 1
    calib_data: str | None = None
    eval_data: str | None = None
    weights: str | None = None
    timing_budget_s: float = 1.0     # per row of the final timing pass
    retime: bool = False
    hf: dict[str, Any] | None = None  # the Hugging Face recipe keys (task, text_data, ...), only those set
    executor: Executor | None = None
    input_shapes: dict[str, list[int]] | None = None
    export: dict[str, Any] | None = None  # the export step's options for a PyTorch MODEL

    @property
    def work(self) -> Path:
        """``DIR/work``: the shared export, the synthetic data, the timings and stop times a rerun reads."""
        return self.out_dir / "work"


@dataclass(frozen=True)
class CandidateSettings:
    """The recipe keys every candidate's recipe shares (and best.yaml keeps, so its step cache keys are theirs):
    the data, the metric, the Hugging Face keys and the measure settings candidates are built with."""

    weights: str | None = None
    eval_data: str | None = None
    metric: str | None = None
    task: str | None = None
    text_data: str | None = None
    seq_len: int | None = None
    image_data: str | None = None
    max_length: int | None = None
    trust_remote_code: bool | None = None
    batch_size: int = 1
    threads: int = 1
    input_shapes: dict[str, list[int]] | None = None

    @classmethod
    def of(cls, run: OptimizeRun) -> CandidateSettings:
        return cls(weights=run.weights, eval_data=run.eval_data, metric=run.metric, batch_size=run.batch_size,
                   threads=run.threads, input_shapes=run.input_shapes or None, **(run.hf or {}))

    def to_json(self) -> dict[str, Any]:
        """The recipe keys, in the order best.yaml writes them: the data and metric (also when unset: a stop time's
        key holds them), the Hugging Face keys that are set, the measure settings, the input shapes if given."""
        hf = {"task": self.task, "text_data": self.text_data, "seq_len": self.seq_len, "image_data": self.image_data,
              "max_length": self.max_length, "trust_remote_code": self.trust_remote_code}
        keys: dict[str, Any] = {"weights": self.weights, "eval_data": self.eval_data, "metric": self.metric,
                                **{k: v for k, v in hf.items() if v is not None},
                                "measure": {"batch_sizes": [self.batch_size], "threads": self.threads,
                                            "budget_s": CANDIDATE_TIMING_S}}
        if self.input_shapes:
            keys["input_shapes"] = self.input_shapes
        return keys

    def recipe(self, model: str, steps: list[Any], output_dir: Path | None = None) -> dict[str, Any]:
        """A recipe of ``steps`` on ``model`` with these keys (as YAML would give it)."""
        out = {} if output_dir is None else {"output_dir": str(output_dir)}
        return {**self.to_json(), "model": model, **out, "steps": steps}


@dataclass
class BuildOutcome:
    """What a candidate's build hands back from where it ran (a process of its own, a Ray worker): the artifact's
    path (reopened from the shared step cache), how many steps the cache served, the error, how long it took."""

    final: str | None
    error: Exception | None
    cached: int
    seconds: float


@dataclass
class Verdict:
    """One split's comparison of a candidate with the original."""

    split: str                  # calibration | evaluation
    drop: float | None = None   # task-metric drop vs the original (points for fractions)
    metric: str | None = None
    cosine: float | None = None
    degenerate: str | None = None  # why its outputs carry no answer where the original's do (eval/metrics.degenerate)

    def text(self) -> str:
        if self.degenerate is not None:
            return f"{self.split} degenerate"
        if self.drop is not None:
            return f"{self.split} {self.metric} drop {self.drop:.3g}"
        return f"{self.split} cosine {self.cosine:.5f}" if self.cosine is not None else f"{self.split} not judged"

    def to_json(self) -> dict[str, Any]:
        facts = {"split": self.split, "metric": self.metric, "drop": self.drop, "cosine": self.cosine}
        return {**facts, "degenerate": self.degenerate} if self.degenerate is not None else facts

    def reasons(self, budget: Budget) -> list[str]:
        """Why the candidate is rejected on this split: degenerate outputs first (whatever they score), then the
        budget."""
        from optkit.eval.task_metric import DEFAULT_MIN_COSINE

        if self.degenerate is not None:
            return [self.degenerate]
        out = []
        if self.drop is not None and self.drop > budget.drop_limit + 1e-9:
            out.append(f"{self.metric} drop {self.drop:.3g} > {budget.drop_limit:g}")
        limit = budget.min_cosine if budget.min_cosine is not None else (
            None if self.drop is not None else DEFAULT_MIN_COSINE)
        if limit is not None and (self.cosine is None or self.cosine < limit):
            out.append(f"cosine {self.cosine if self.cosine is not None else float('nan'):.5f} < {limit:g}")
        return out


@dataclass
class Outcome:
    """One candidate: what it is, what happened, and what was measured."""

    candidate: CandidateRecipe
    status: str = "pending"  # built | rejected (budget, slower) | failed | stopped (time budget) | skipped
    why: str | None = None
    artifact: Artifact | None = None
    record: StepRecord | None = None
    verdicts: list[Verdict] = field(default_factory=list)  # vs the original: calibration split, evaluation split
    p50_ms: float | None = None
    p90_ms: float | None = None
    speedup: float | None = None    # p50 of the fp32 model / this one's, both from the same timing pass
    speedup_vs_original: float | None = None  # p50 of the original model (MODEL) / this one's, same pass
    timing_pass: int | None = None  # 1: all survivors together; 2: the finalists again
    seconds: float = 0.0
    cached: bool = False

    @property
    def name(self) -> str:
        return self.candidate.name

    def verdict(self, split: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.split == split), None)

    @property
    def drop(self) -> float | None:
        """The task-metric drop vs the original on the evaluation split (points for fractions)."""
        v = self.verdict("evaluation")
        return v.drop if v else None

    @property
    def cosine(self) -> float | None:
        """The mean output cosine vs the original on the evaluation split."""
        v = self.verdict("evaluation")
        return v.cosine if v else None

    @property
    def built(self) -> Artifact:
        """The artifact of a built candidate (only those are judged, timed and ranked)."""
        if self.artifact is None:
            raise ValueError(f"{self.name} has no artifact ({self.status})")
        return self.artifact

    def recipe_steps(self) -> list[dict[str, Any]]:
        """The candidate's steps with every choice its build made by timing pinned, so a recipe of them rebuilds
        this very artifact: compile ort-cpu's session settings."""
        from optkit.backends.onnxruntime import ort_session_name

        chosen = self.record.details.get("chosen") if self.record and self.record.step == "compile" else None
        steps = []
        for entry in self.candidate.steps:
            (name, options), = entry.items()
            if name == "compile" and options.get("target") == "ort-cpu" and chosen and ort_session_name(chosen):
                options = {**options, "ort_session": ort_session_name(chosen)}
            steps.append({name: options})
        return steps


@dataclass
class Search:
    """What ``optimize`` found: every candidate's outcome, the skipped ones, the winner."""

    source: Artifact                    # the fp32 ONNX model every candidate starts from
    prefix: list[dict[str, Any]]        # steps that made it from MODEL (export), for the winner's recipe
    outcomes: list[Outcome]
    skipped: list[Skipped]
    facts: ModelFacts
    budget: Budget
    batch_size: int
    threads: int = 1
    winner: Outcome | None = None
    baseline_p50_ms: float | None = None
    baseline_p90_ms: float | None = None
    wall_time_s: float = 0.0
    calib_data: str | None = None        # the calibration split candidates were judged on as well
    timing_reused_from: str | None = None  # when the timings are a cached rerun's: when they were measured
    notes: list[str] = field(default_factory=list)
    executor: str = "local"
    timeline: list[TaskRun] = field(default_factory=list)  # every build and timing task: where and when it ran
    # MODEL when it is not the fp32 ONNX model (a PyTorch model, exported first): timed in the same passes
    original: Artifact | None = None
    original_p50_ms: float | None = None
    original_p90_ms: float | None = None
    original_not_timed: str | None = None  # why the original has no figure from the timing pass
    calib_samples: int | None = None       # how many samples of the calibration split were judged
    time_budget_s: float = 600.0
    build_time_s: float = 0.0              # measured: from the start until the last candidate's build ended
    timing_reserve_s: float = 0.0          # kept of the time budget for the final timing pass: builds end before it
    second_pass_skipped: bool = False      # the finalists' second pass did not fit in what was left of the budget
    recipe: dict[str, Any] | None = None   # best.yaml: rebuilds the winner from MODEL into DIR/best/
    best: Artifact | None = None           # the winner as best.yaml's run built it (from the cache) in DIR/best/

    def built(self) -> list[Outcome]:
        """The candidates built and within budget so far."""
        return [o for o in self.outcomes if o.status == "built"]

    def outcome(self, name: str) -> Outcome:
        return next(o for o in self.outcomes if o.name == name)
