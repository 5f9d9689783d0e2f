"""``optkit optimize``: build the candidates of ``optimize_space`` through the engine, judge them against the
original model on the task metric, time the survivors side by side in one pass, keep the fastest within budget.

Every candidate is a recipe run with the step cache on (a rerun reuses every artifact); for a PyTorch model they
share one export. Candidates are judged on the same evaluation data as every ledger, against the original model
(a step's own check judges it against its input, with the same budget). The survivors and the fp32 model are
then timed round-robin in one interleaved pass at the chosen batch size, so the ranking holds on a busy machine;
when two are within timing noise the simpler one wins (fewer steps, fp32 before int8, then smaller).

The local executor builds the candidates one after another in this process. The Ray executor builds them as
parallel tasks (a fallback only once the candidate it stands in for missed the budget), judges each here as it
lands, and runs the timing pass as one task alone on a measurement node; the report says which node timed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.engine.executor import Executor, Job, LocalExecutor, TaskRun
from optkit.engine.optimize_judge import CalibrationJudge, Verdict, judge
from optkit.engine.optimize_space import Budget, CandidateRecipe, ModelFacts, Skipped, TARGETS, candidate_space
from optkit.engine.optimize_timing import time_survivors
from optkit.types.artifact import Artifact
from optkit.types.errors import OptkitError, StepError, UsageError, first_line
from optkit.types.records import StepRecord
from optkit.types.ui import UI

NOISE = 0.03  # two p50s closer than this (relative) are a tie: the simpler candidate wins
CANDIDATE_TIMING_S = 0.1  # per row while a candidate is built: the ranking comes from the final interleaved pass


@dataclass
class Outcome:
    """One candidate: what it is, what happened, and what was measured."""

    candidate: CandidateRecipe
    status: str = "pending"  # built | rejected (budget, slower) | failed | skipped
    why: str | None = None
    artifact: Artifact | None = None
    record: StepRecord | None = None
    verdicts: list[Verdict] = field(default_factory=list)  # vs the original: calibration split, evaluation split
    p50_ms: float | None = None
    p90_ms: float | None = None
    speedup: float | None = None    # p50 of the fp32 model / this one's, both from the same timing pass
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

    def recipe_steps(self) -> list[dict[str, Any]]:
        """The candidate's steps with every choice its build made by timing pinned, so a recipe of them rebuilds
        this very artifact: compile ort-cpu's session settings."""
        from optkit.steps.compile import ort_session_name

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


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds -> seconds."""
    value = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UsageError(f"bad --time-budget '{text}'", hint="Give a duration like 90s, 10m or 1h")
    return seconds


def _recipe(model: str, out: Path, steps: list[dict], common: dict[str, Any]) -> "Any":
    from optkit.engine.recipe import Recipe

    return Recipe.model_validate({**common, "model": model, "output_dir": str(out), "steps": steps})


def _run(recipe, ui: UI, base: Path | None = None):
    from optkit.engine.run import collect_run

    # ranked by one pass at the end, not by the step-time figures
    return collect_run(recipe, base or Path.cwd(), ui, use_cache=True, ledger_timing=False)


def build_candidate(model: str, out: str, steps: list[dict], common: dict[str, Any], base: str) -> dict[str, Any]:
    """One candidate's recipe run, where an executor puts it (a Ray worker, say): what the driver needs back - the
    artifact's path (it reopens it from the shared cache), how many steps came from the cache, the error."""
    t0 = time.perf_counter()
    try:
        result, error = _run(_recipe(model, Path(out), steps, common), UI(quiet=True), Path(base))
    except OptkitError as exc:  # a candidate the input cannot take (e.g. ops OpenVINO cannot read)
        result, error = None, exc
    final = result.final if result is not None and error is None else None
    return {"final": str(final.path) if final is not None else None, "error": error,
            "cached": len(result.cached) if result is not None else 0, "seconds": time.perf_counter() - t0}


def _facts(source: Artifact, calib_data: str | None) -> ModelFacts:
    from optkit.steps._transformer import has_attention
    from optkit.types import onnx_io
    from optkit.types.machine import cpu_flags

    model = onnx_io.load_model(source.path)
    return ModelFacts(ops=frozenset(n.op_type for n in model.graph.node), attention=has_attention(model),
                      calibration=bool(calib_data or source.data.get("calib")), flags=frozenset(cpu_flags()))


def optimize(model: str, out_dir: Path, ui: UI, *, targets: tuple[str, ...] = TARGETS, metric: str | None = None,
             budget: Budget = Budget(), batch_size: int = 1, time_budget_s: float = 600.0, threads: int = 1,
             calib_data: str | None = None, eval_data: str | None = None, weights: str | None = None,
             timing_budget_s: float = 1.0, retime: bool = False, hf: dict[str, Any] | None = None,
             executor: Executor | None = None) -> Search:
    started = time.perf_counter()
    executor = executor or LocalExecutor()
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise UsageError(f"--targets: unknown target {', '.join(unknown)}", hint=f"Use {', '.join(TARGETS)}")
    common = {"weights": weights, "eval_data": eval_data, "metric": metric, **(hf or {}),
              "measure": {"batch_sizes": [batch_size], "threads": threads, "budget_s": CANDIDATE_TIMING_S}}
    quiet = UI(quiet=True)
    source, prefix = _fp32_onnx(model, out_dir, common, ui, quiet)
    facts = _facts(source, calib_data)
    cands, skipped = candidate_space(facts, targets, budget, calib_data)
    search = Search(source, prefix, [Outcome(c) for c in cands], skipped, facts, budget, batch_size, threads)
    ui.info(f"optimize: {len(cands)} candidate(s) for {', '.join(targets)} "
            f"({len(skipped)} skipped: {', '.join(s.name for s in skipped) or 'none'})")
    calib = calib_data or (str(source.data["calib"]) if source.data.get("calib") else None)
    search.calib_data = calib
    judge_calib = CalibrationJudge(source, Path(calib), metric, threads) if calib else None
    base_model = model if prefix else str(source.path)
    if executor.parallel:
        _build_in_parallel(search, base_model, out_dir, common, started, time_budget_s, ui, judge_calib, executor)
    else:
        for k, outcome in enumerate(search.outcomes, 1):
            _build(search, outcome, k, base_model, out_dir, common, started, time_budget_s, ui, quiet, judge_calib)
    time_survivors(search, out_dir / "work", timing_budget_s, ui, retime=retime, executor=executor)
    search.executor, search.timeline = executor.name, list(executor.timeline)
    search.winner = _choose(search.outcomes)
    search.wall_time_s = time.perf_counter() - started
    return search


def _fp32_onnx(model: str, out_dir: Path, common: dict, ui: UI, quiet: UI) -> tuple[Artifact, list[dict]]:
    """The fp32 ONNX model every candidate starts from: MODEL itself, or its export (cached)."""
    from optkit.types.artifact import open_artifact

    source = open_artifact(model, weights=Path(common["weights"]) if common["weights"] else None,
                           task=common.get("task"), trust_remote_code=bool(common.get("trust_remote_code")))
    prefix: list[dict] = []
    if source.format == "torch":
        prefix = [{"name": "export", "options": {}, "output": str(out_dir / "work" / "00_export.onnx")}]
        ui.info("optimize: exporting the fp32 ONNX model every candidate starts from")
        result, error = _run(_recipe(model, out_dir / "work", prefix, common), quiet)
        if error is not None:
            raise error
        source = result.final
    elif source.format != "onnx":
        raise UsageError(f"optimize takes a PyTorch or ONNX model, not {source.format}",
                         hint="Pass the model you would export, or its ONNX file")
    if common["eval_data"]:  # the data the final timing pass feeds, as the candidates' runs were given it
        source = source.with_(data={**source.data, "eval": Path(common["eval_data"]).resolve()})
    return source, prefix


def _fallback_skip(search: Search, outcome: Outcome) -> bool:
    """A fallback (a costlier search for the same idea) is built only when the simpler one missed the budget."""
    base = next(o for o in search.outcomes if o.name == outcome.candidate.fallback_for)
    if base.status == "rejected":
        return False
    outcome.status = "skipped"
    outcome.why = base.why if base.status == "skipped" else (
        f"not needed: {base.name} is within budget" if base.status == "built" else f"{base.name} failed")
    return True


def _steps(search: Search, cand: CandidateRecipe) -> list[dict]:
    return [*search.prefix, *({"name": name, "options": options} for s in cand.steps for name, options in s.items())]


def _build(search: Search, outcome: Outcome, k: int, model: str, out_dir: Path, common: dict, started: float,
           time_budget_s: float, ui: UI, quiet: UI, calibration: CalibrationJudge | None) -> None:
    cand, n = outcome.candidate, len(search.outcomes)
    if cand.fallback_for and _fallback_skip(search, outcome):
        return
    elapsed = time.perf_counter() - started
    built = [o.seconds for o in search.outcomes if o.status in ("built", "rejected", "failed") and not o.cached]
    guess = sum(built) / len(built) if built else 0.0
    if elapsed + guess > time_budget_s:
        outcome.status, outcome.why = "skipped", f"time budget ({time_budget_s:.0f}s) spent after {elapsed:.0f}s"
        return
    best = min((o for o in search.outcomes if o.status == "built"), key=lambda o: o.record.measured.latency_at().p50_ms
               if o.record.measured.latency_at() else float("inf"), default=None)
    eta = f", ~{guess * (n - k + 1):.0f}s left" if guess else ""
    ui.info(f"[bold]candidate {k} of {n}[/]: {cand.name} ({cand.what})"
            + (f"; best so far {best.name}" if best else "") + eta)
    t0 = time.perf_counter()
    steps = _steps(search, cand)
    try:
        result, error = _run(_recipe(model, out_dir / "candidates" / cand.name, steps, common), quiet)
    except OptkitError as exc:  # a candidate the input cannot take (e.g. ops OpenVINO cannot read)
        result, error = None, exc
    outcome.seconds = time.perf_counter() - t0
    if error is None:
        outcome.cached = len(result.cached) == len(steps)
    _settle(search, outcome, result.final if error is None else None, error, ui, calibration)


def _settle(search: Search, outcome: Outcome, final: Artifact | None, error: Exception | None, ui: UI,
            calibration: CalibrationJudge | None) -> None:
    """A candidate's build is over: rejected, failed, or built and judged against the original."""
    name = outcome.name
    if error is not None:
        outcome.status = "rejected" if isinstance(error, StepError) else "failed"
        outcome.why = error.one_line() if isinstance(error, OptkitError) else first_line(error)
        ui.info(f"  [yellow]✗[/] {name}: {outcome.why}")
        return
    outcome.artifact, outcome.record = final, final.record
    outcome.status = "built"
    try:
        judge(outcome, search.budget, calibration)
    except OptkitError as exc:  # outputs the calibration split cannot be judged on
        outcome.status, outcome.why = "failed", exc.one_line()
    mark = "[green]✓[/]" if outcome.status == "built" else "[yellow]✗[/]"
    judged = ", ".join(v.text() for v in outcome.verdicts) or "not judged"
    ui.info(f"  {mark} {name}: {judged}{'; ' + outcome.why if outcome.why else ''} "
            f"({'cached' if outcome.cached else f'{outcome.seconds:.1f}s'})")


def _build_in_parallel(search: Search, model: str, out_dir: Path, common: dict, started: float,
                       time_budget_s: float, ui: UI, calibration: CalibrationJudge | None,
                       executor: Executor) -> None:
    """Every candidate as a build task at once; then, in waves, the fallbacks of those that missed the budget."""
    from optkit.engine.run import build_cpus
    from optkit.types.artifact import open_artifact

    waiting = list(search.outcomes)
    while waiting:
        wave = [o for o in waiting if not o.candidate.fallback_for
                or next(b for b in search.outcomes if b.name == o.candidate.fallback_for).status != "pending"]
        if not wave:
            break
        waiting = [o for o in waiting if o not in wave]
        wave = [o for o in wave if not (o.candidate.fallback_for and _fallback_skip(search, o))]
        elapsed = time.perf_counter() - started
        if elapsed > time_budget_s:
            for o in wave:
                o.status, o.why = "skipped", f"time budget ({time_budget_s:.0f}s) spent after {elapsed:.0f}s"
            continue
        if not wave:
            continue
        ui.info(f"optimize: building {len(wave)} candidate(s) as {executor.name} tasks: "
                f"{', '.join(o.name for o in wave)}")
        jobs = []
        for o in wave:
            out, steps = out_dir / "candidates" / o.name, _steps(search, o.candidate)
            try:
                cpus = build_cpus(_recipe(model, out, steps, common), Path.cwd())
            except OptkitError:  # the build itself will say what is wrong with the candidate, as a local one would
                cpus = 1
            jobs.append(Job(o.name, build_candidate, (model, str(out), steps, common, str(Path.cwd())), cpus))
        by_name = {o.name: o for o in wave}
        for job, got in executor.builds(jobs):
            outcome = by_name[job.name]
            if isinstance(got, Exception):
                _settle(search, outcome, None, got, ui, calibration)
                continue
            outcome.seconds = got["seconds"]
            final = None
            if got["error"] is None:
                try:
                    final = open_artifact(got["final"])  # from the shared cache, its sha256 checked below
                    if final.record is None or final.digest() != final.record.sha256:
                        raise StepError(f"{job.name}: the artifact a worker wrote does not match its sidecar")
                except OptkitError as exc:
                    got["error"] = exc
            outcome.cached = got["error"] is None and got["cached"] == len(job.args[2])
            _settle(search, outcome, final, got["error"], ui, calibration)


def _choose(outcomes: list[Outcome]) -> Outcome | None:
    timed = [o for o in outcomes if o.status == "built" and o.p50_ms is not None]
    if not timed:
        return None
    fastest = min(o.p50_ms for o in timed)
    ties = [o for o in timed if o.p50_ms <= fastest * (1 + NOISE)]
    return min(ties, key=lambda o: (o.candidate.simplicity, o.artifact.size_bytes(), o.p50_ms))
