"""``optkit optimize``: build the candidates of ``optimize_space`` through the engine, judge them against the
original model on the task metric, time the survivors side by side in one pass, keep the fastest within budget.

Every candidate is a recipe run with the step cache on (a rerun reuses every artifact); for a PyTorch model they
share one export. Candidates are judged on the same evaluation data as every ledger, against the original model
(a step's own check judges it against its input, with the same budget). The survivors and the fp32 model are
then timed round-robin in one interleaved pass at the chosen batch size, so the ranking holds on a busy machine;
when two are within timing noise the simpler one wins (fewer steps, fp32 before int8, then smaller).

The local executor builds the candidates one after another, each in a process of its own. The Ray executor builds
them as parallel tasks (a fallback only once the candidate it stands in for missed the budget), judges each here as
it lands, and runs the timing pass as one task alone on a measurement node; the report says which node timed.

``--time-budget`` bounds the whole search. Every target's primary candidates are built before any fallback (a
costlier search for an idea that missed: the accuracy guard, NNCF's accuracy control), and every build ends by one
deadline: the budget less a reserve for the final timing pass (the survivors so far and one more, at most half the
budget). A local build that is still running then is stopped (its process and what it started) and reported
"stopped at the time budget"; a candidate with too little time left is skipped, saying how much was left. How long
a stopped candidate ran is kept in ``work/`` so a rerun with less time left skips it instead of stopping it again.

The winner's recipe (``best.yaml``) is then run here into ``DIR/best/`` with the step cache, its steps seeded with
copies of the winner's own (same steps, options, inputs and measure settings: the same cache keys), so that
``optkit run DIR/best.yaml`` finds every step in the cache; only a step whose choice by timing best.yaml pins
(compile ort-cpu's session) is built once more, to the same bytes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.engine.executor import Executor, Job, LocalExecutor, Stopped, TaskRun
from optkit.engine.optimize_judge import CalibrationJudge, Verdict, judge
from optkit.engine.optimize_space import (Budget, CandidateRecipe, ModelFacts, Skipped, TARGETS, build_order,
                                          candidate_space)
from optkit.engine.optimize_timing import time_survivors, timing_reserve_s
from optkit.types.artifact import Artifact
from optkit.types.errors import OptkitError, StepError, UsageError, first_line
from optkit.types.files import Staging
from optkit.types.records import StepRecord
from optkit.types.ui import UI

NOISE = 0.03  # two p50s closer than this (relative) are a tie: the simpler candidate wins
CANDIDATE_TIMING_S = 0.1  # per row while a candidate is built: the ranking comes from the final interleaved pass
BEST_DIR = "best"  # best.yaml's output_dir, beside it
MIN_BUILD_S = 2.0  # less time left than this: a build's process cannot even start and look in the cache
STOP_TIMES_FILE = "stopped.json"  # in work/: how long each stopped candidate ran, for the next run


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


@dataclass
class Clock:
    """The time budget: builds end in time for the final timing pass to end on it."""

    started: float          # time.perf_counter() when optimize started
    budget_s: float         # --time-budget
    timing_budget_s: float  # per row of the final timing pass

    def deadline(self, search: Search) -> float:
        """When every build must have ended: the budget less the final timing of the survivors so far and one
        more (at most half the budget)."""
        survivors = sum(o.status == "built" for o in search.outcomes) + 1
        search.timing_reserve_s = min(timing_reserve_s(survivors, search.original is not None, self.timing_budget_s),
                                      self.budget_s / 2)
        return self.started + self.budget_s - search.timing_reserve_s


class StopTimes:
    """How long each candidate ran before it was stopped at the time budget, kept in ``work/`` for the next run
    (by its steps and input): one that needs more than the time left is skipped instead of started and stopped."""

    def __init__(self, work: Path, search: Search, common: dict[str, Any]) -> None:
        import json

        source = search.source
        self.path, self.changed = work / STOP_TIMES_FILE, False
        self.facts = {"source": source.record.sha256 if source.record else source.digest(), "common": common}
        try:
            ran = json.loads(self.path.read_text())
        except (OSError, ValueError):
            ran = {}
        self.ran: dict[str, float] = ran if isinstance(ran, dict) else {}

    def key(self, name: str, steps: list[dict]) -> str:
        from optkit.engine.cache import _json_sha256

        return f"{name}:{_json_sha256({**self.facts, 'steps': steps})}"

    def get(self, key: str) -> float | None:
        value = self.ran.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    def set(self, key: str, seconds: float | None) -> None:
        if self.ran.get(key) != seconds:
            self.changed = True
            if seconds is None:
                self.ran.pop(key, None)
            else:
                self.ran[key] = round(seconds, 1)

    def save(self, ui: UI) -> None:
        from optkit.types.files import write_json

        if not self.changed:
            return
        try:
            write_json(self.path, self.ran)
        except OSError as exc:  # only the next run's shortcut is lost
            ui.warn(f"could not record how long the stopped candidates ran: {exc}")


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


def _run(recipe, ui: UI, base: Path | None = None, cache_only: bool = False):
    from optkit.engine.run import collect_run

    # ranked by one pass at the end, not by the step-time figures
    return collect_run(recipe, base or Path.cwd(), ui, use_cache=True, ledger_timing=False, cache_only=cache_only)


def build_candidate(model: str, out: str, steps: list[dict], common: dict[str, Any], base: str,
                    cache_only: bool = False) -> dict[str, Any]:
    """One candidate's recipe run, where an executor puts it (a build process of its own, a Ray worker): what the
    driver needs back - the artifact's path (it reopens it from the shared cache), how many steps came from the
    cache, the error. ``cache_only``: ``engine.run.NotCached`` unless every step comes from the cache."""
    t0 = time.perf_counter()
    try:
        result, error = _run(_recipe(model, Path(out), steps, common), UI(quiet=True), Path(base), cache_only)
    except OptkitError as exc:  # a candidate the input cannot take (e.g. ops OpenVINO cannot read)
        result, error = None, exc
    final = result.final if result is not None and error is None else None
    return {"final": str(final.path) if final is not None else None, "error": error,
            "cached": len(result.cached) if result is not None else 0, "seconds": time.perf_counter() - t0}


def _facts(source: Artifact, calib_data: str | None) -> ModelFacts:
    from optkit.steps._transformer import has_attention
    from optkit.backends import onnx_io
    from optkit.types.machine import cpu_flags

    model = onnx_io.load_model(source.path)
    return ModelFacts(ops=frozenset(n.op_type for n in model.graph.node), attention=has_attention(model),
                      calibration=bool(calib_data or source.data.get("calib")), flags=frozenset(cpu_flags()))


def optimize(model: str, out_dir: Path, ui: UI, *, targets: tuple[str, ...] = TARGETS, metric: str | None = None,
             budget: Budget = Budget(), batch_size: int = 1, time_budget_s: float = 600.0, threads: int = 1,
             calib_data: str | None = None, eval_data: str | None = None, weights: str | None = None,
             timing_budget_s: float = 1.0, retime: bool = False, hf: dict[str, Any] | None = None,
             executor: Executor | None = None, input_shapes: dict[str, list[int]] | None = None,
             export: dict[str, Any] | None = None) -> Search:
    started = time.perf_counter()
    executor = executor or LocalExecutor()
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise UsageError(f"--targets: unknown target {', '.join(unknown)}", hint=f"Use {', '.join(TARGETS)}")
    common = {"weights": weights, "eval_data": eval_data, "metric": metric, **(hf or {}),
              "measure": {"batch_sizes": [batch_size], "threads": threads, "budget_s": CANDIDATE_TIMING_S}}
    if input_shapes:
        common["input_shapes"] = input_shapes
    from optkit.engine.optimize_data import synthetic_eval_data

    common["eval_data"] = common["eval_data"] or synthetic_eval_data(model, out_dir, common, ui)
    quiet = UI(quiet=True)
    source, prefix, original = _fp32_onnx(model, out_dir, common, ui, quiet, export or {})
    facts = _facts(source, calib_data)
    cands, skipped = candidate_space(facts, targets, budget, calib_data)
    cands = build_order(cands)  # every target's primaries, then the fallbacks: they get the time left
    search = Search(source, prefix, [Outcome(c) for c in cands], skipped, facts, budget, batch_size, threads,
                    original=original, time_budget_s=time_budget_s)
    ui.info(f"optimize: {len(cands)} candidate(s) for {', '.join(targets)} "
            f"({len(skipped)} skipped: {', '.join(s.name for s in skipped) or 'none'})")
    calib = calib_data or (str(source.data["calib"]) if source.data.get("calib") else None)
    search.calib_data = calib
    judge_calib = CalibrationJudge(source, Path(calib), metric, threads) if calib else None
    base_model = model if prefix else str(source.path)
    clock = Clock(started, time_budget_s, timing_budget_s)
    if executor.parallel:
        _build_in_parallel(search, base_model, out_dir, common, clock, ui, judge_calib, executor)
    else:
        stops = StopTimes(out_dir / "work", search, common)
        for k, outcome in enumerate(search.outcomes, 1):
            _build(search, outcome, k, base_model, out_dir, common, clock, ui, judge_calib, executor, stops)
        stops.save(ui)
    search.build_time_s = time.perf_counter() - started
    search.calib_samples = judge_calib.samples if judge_calib else None
    time_survivors(search, out_dir / "work", timing_budget_s, ui, retime=retime, executor=executor,
                   end_by=clock.started + clock.budget_s)
    search.executor, search.timeline = executor.name, list(executor.timeline)
    search.winner = _choose(search.outcomes)
    if search.winner is not None:
        search.recipe = best_recipe(search, model, common)
        search.best = _rebuild_winner(search, out_dir, ui)
    search.wall_time_s = time.perf_counter() - started
    return search


def best_recipe(search: Search, model: str, common: dict[str, Any]) -> dict[str, Any]:
    """The recipe that rebuilds the winner from MODEL (into ``best/`` beside it), with the recipe keys, options and
    measure settings its candidate was built with: the same step cache keys, so its steps are reused."""
    steps = [*({p["name"]: p["options"]} for p in search.prefix), *search.winner.recipe_steps()]
    return {k: v for k, v in {"model": model, **common, "output_dir": BEST_DIR, "steps": steps}.items()
            if v is not None}


def _rebuild_winner(search: Search, out_dir: Path, ui: UI) -> Artifact | None:
    """best.yaml's run, here: its steps seeded with copies of the winner's chain, then run with the step cache
    (quietly, without the ledger's timing pass). None, with a warning, when it cannot be done: ``optkit run
    best.yaml`` then builds what is missing itself."""
    from optkit.engine.recipe import Recipe, plan
    from optkit.engine.run import collect_run
    from optkit.types.runfolder import run_output_dir

    folder = out_dir / BEST_DIR
    error: Exception | None
    try:
        recipe = Recipe.model_validate({**search.recipe, "output_dir": str(folder)})
        with run_output_dir(folder):
            _seed(search.winner.artifact, [ps for ps in plan(recipe, out_dir) if ps.output is not None])
            result, error = collect_run(recipe, out_dir, UI(quiet=True), use_cache=True, ledger_timing=False)
    except (OptkitError, OSError) as exc:
        error = exc
    if error is not None:
        why = error.one_line() if isinstance(error, OptkitError) else first_line(error)
        ui.warn(f"could not build the winner's recipe into {folder} ({why}); `optkit run best.yaml` will")
        return None
    if result.final.record.sha256 != search.winner.record.sha256:  # a pinned choice that does not rebuild the same
        ui.warn(f"best.yaml built {result.final.path} with other bytes than the winner's {search.winner.artifact.path};"
                f" best.{search.winner.artifact.path.suffix.lstrip('.')} is the winner as timed")
        return None
    return result.final


def _seed(final: Artifact, produced: list) -> None:
    """Copy the winner's chain to the outputs best.yaml's producing steps get (its last rows are those steps), up to
    the first step whose name or options differ from what was built: that one and the rest are built by the run."""
    from optkit.engine.cache import lookup_artifact
    from optkit.backends.opening import open_artifact

    chain = final.chain()
    if len(chain) <= len(produced):
        return
    moved: dict[str, str] = {}
    for rec, ps in zip(chain[-len(produced):], produced):
        if rec.step != ps.step.name or rec.params != ps.config.model_dump(mode="json") or not rec.cache_key:
            return
        hit, _ = lookup_artifact(ps.output, rec.cache_key)
        if hit is None or hit.record.sha256 != rec.sha256:
            built = open_artifact(rec.artifact)
            if built.record is None or built.digest() != rec.sha256:
                return
            with Staging() as stage:
                copy_artifact(built, ps.output, stage, moved)
                stage.commit()
        moved[rec.artifact] = str(ps.output)


def copy_artifact(artifact: Artifact, dst: Path, stage: "Staging", moved: dict[str, str] | None = None) -> Artifact:
    """``artifact``'s files staged at ``dst`` (an OpenVINO IR's .bin beside it) with a sidecar of their own: the same
    record and lineage (so the same digest: the bytes are the same), its path the copy's. ``moved``: ancestors
    already copied (old path -> new), whose rows then name their copies; the reference outputs follow the copy
    when they sit beside ``artifact`` (as a run's first step writes them)."""
    import shutil

    from optkit.engine.run import REFERENCE_SUFFIX
    from optkit.types.artifact import sidecar_path
    from optkit.types.sidecar import write_sidecar_text

    if artifact.record is None or artifact.path.is_dir():
        raise UsageError(f"{artifact.path} is not a file optkit wrote: it cannot be copied with its ledger")
    moved = {} if moved is None else moved
    first = None
    for src in artifact.files():
        target = dst if src == artifact.path else dst.with_suffix(src.suffix)
        tmp = stage.path_for(target, like=first)
        first = first or tmp
        shutil.copyfile(src, tmp)
    reference = artifact.reference
    if reference:
        ref = Path(reference["path"])
        if str(ref) not in moved and ref == artifact.path.with_name(artifact.path.name + REFERENCE_SUFFIX):
            new_ref = dst.with_name(dst.name + REFERENCE_SUFFIX)
            shutil.copyfile(ref, stage.path_for(new_ref))
            moved[str(ref)] = str(new_ref)
        reference = {**reference, "path": moved.get(str(ref), str(ref))}

    def repath(rec: StepRecord, own: str | None = None) -> StepRecord:
        update: dict[str, Any] = {"artifact": own or moved.get(rec.artifact, rec.artifact)}
        if rec.parent is not None and rec.parent.artifact in moved:
            update["parent"] = rec.parent.model_copy(update={"artifact": moved[rec.parent.artifact]})
        return rec.model_copy(update=update)

    copy = artifact.with_(path=dst, record=repath(artifact.record, str(dst)), reference=reference,
                          lineage=[repath(rec) for rec in artifact.lineage])
    stage.write_text(sidecar_path(dst), write_sidecar_text(copy, dst))
    return copy


def _fp32_onnx(model: str, out_dir: Path, common: dict, ui: UI, quiet: UI,
               export: dict[str, Any]) -> tuple[Artifact, list[dict], Artifact | None]:
    """The fp32 ONNX model every candidate starts from: MODEL itself, or its export (cached); and MODEL when it is
    not that model (a PyTorch model, timed beside the candidates so the speed-up vs the original is measured)."""
    from optkit.backends.opening import open_artifact

    source = open_artifact(model, weights=Path(common["weights"]) if common["weights"] else None,
                           task=common.get("task"), trust_remote_code=bool(common.get("trust_remote_code")))
    original = source if source.format == "torch" else None
    prefix: list[dict] = []
    if source.format == "torch":
        prefix = [{"name": "export", "options": export, "output": str(out_dir / "work" / "00_export.onnx")}]
        ui.info("optimize: exporting the fp32 ONNX model every candidate starts from")
        result, error = _run(_recipe(model, out_dir / "work", prefix, common), quiet)
        if error is not None:
            raise error
        source = result.final
        if not original.inputs:  # a factory without a spec: the inputs its export was given (--input-shape, data)
            original = original.with_(inputs=source.inputs)
    elif source.format != "onnx":
        raise UsageError(f"optimize takes a PyTorch or ONNX model, not {source.format}",
                         hint="Pass the model you would export, or its ONNX file")
    elif export:
        ui.warn(f"{', '.join(sorted(export))} ignored: MODEL is ONNX already (they are export's options)")
    if common["eval_data"]:  # the data the final timing pass feeds, as the candidates' runs were given it
        source = source.with_(data={**source.data, "eval": Path(common["eval_data"]).resolve()})
    return source, prefix, original


def _fallback_skip(search: Search, outcome: Outcome) -> bool:
    """A fallback (a costlier search for the same idea) is built only when the simpler one missed the budget."""
    base = next(o for o in search.outcomes if o.name == outcome.candidate.fallback_for)
    if base.status == "rejected":
        return False
    outcome.status = "skipped"
    outcome.why = base.why if base.status == "skipped" else (
        f"not needed: {base.name} is within budget" if base.status == "built" else
        f"{base.name} was stopped at the time budget" if base.status == "stopped" else f"{base.name} failed")
    return True


def _steps(search: Search, cand: CandidateRecipe) -> list[dict]:
    return [*search.prefix, *({"name": name, "options": options} for s in cand.steps for name, options in s.items())]


def _too_little(left: float, name: str, ran: float | None, budget_s: float) -> str | None:
    """Why a candidate is not started with ``left`` seconds to its deadline (None: start it). ``ran``: how long it
    ran when it was last stopped at the time budget, without finishing."""
    need = max(MIN_BUILD_S, ran or 0.0)
    if left > need:
        return None
    because = (f"it ran {ran:.0f}s without finishing when last stopped" if ran and ran >= MIN_BUILD_S
               else f"a build needs at least {MIN_BUILD_S:.0f}s to start")
    return f"{max(left, 0.0):.0f}s left of the {budget_s:.0f}s time budget, too little for {name} ({because})"


def _folders(steps: list[dict], out: Path) -> list[Path]:
    """The folders a candidate's build writes into: its own, and the shared export's."""
    return [out, *sorted({Path(s["output"]).parent for s in steps if s.get("output")} - {out})]


def _build(search: Search, outcome: Outcome, k: int, model: str, out_dir: Path, common: dict, clock: Clock,
           ui: UI, calibration: CalibrationJudge | None, executor: Executor, stops: StopTimes) -> None:
    """One candidate, built in a process of its own that is stopped at the deadline, then judged here."""
    cand, n = outcome.candidate, len(search.outcomes)
    if cand.fallback_for and _fallback_skip(search, outcome):
        return
    now, deadline = time.perf_counter(), clock.deadline(search)
    steps = _steps(search, cand)
    key = stops.key(cand.name, steps)
    why = _too_little(deadline - now, cand.name, stops.get(key), clock.budget_s)
    if why is not None:
        outcome.status, outcome.why = "skipped", why
        ui.info(f"  [yellow]–[/] {cand.name}: skipped, {why}")
        return
    best = min((o for o in search.outcomes if o.status == "built"), key=lambda o: o.record.measured.latency_at().p50_ms
               if o.record.measured.latency_at() else float("inf"), default=None)
    ui.info(f"[bold]candidate {k} of {n}[/]: {cand.name} ({cand.what})"
            + (f"; best so far {best.name}" if best else "")
            + f"; {now - clock.started:.0f}s of the {clock.budget_s:.0f}s time budget used")
    out = out_dir / "candidates" / cand.name
    job = Job(cand.name, build_candidate, (model, str(out), steps, common, str(Path.cwd())))
    try:
        got = _from_cache(job) or executor.build_until(job, deadline, cleanup=_folders(steps, out))
    except Stopped as stop:
        outcome.seconds = stop.seconds
        outcome.status, outcome.why = "stopped", f"stopped at the time budget (ran {stop.seconds:.0f}s)"
        stops.set(key, stop.seconds)
        ui.info(f"  [yellow]■[/] {cand.name}: {outcome.why}")
        return
    except Exception as exc:  # noqa: BLE001 - its process crashed or its build raised: a failed candidate
        outcome.seconds = time.perf_counter() - now
        _settle(search, outcome, None, exc, ui, calibration)
        return
    outcome.seconds = time.perf_counter() - now
    stops.set(key, None)
    _land(search, outcome, job, got, ui, calibration)


def _from_cache(job: Job) -> dict[str, Any] | None:
    """``job``'s answer when the step cache serves every step of it, read here (a build process of its own costs
    a second or more to start: a rerun would pay it for every candidate); None when something must be built."""
    from optkit.engine.run import NotCached

    try:
        return build_candidate(*job.args, cache_only=True)
    except NotCached:
        return None


def _land(search: Search, outcome: Outcome, job: Job, got: dict[str, Any], ui: UI,
          calibration: CalibrationJudge | None) -> None:
    """A build's answer (``build_candidate``'s, from its process or task): the artifact reopened from the step
    cache and checked against its sidecar, then judged."""
    from optkit.backends.opening import open_artifact

    final, error = None, got["error"]
    if error is None:
        try:
            final = open_artifact(got["final"])
            if final.record is None or final.digest() != final.record.sha256:
                raise StepError(f"{job.name}: the artifact its build wrote does not match its sidecar")
        except OptkitError as exc:
            error = exc
    outcome.cached = error is None and got["cached"] == len(job.args[2])
    _settle(search, outcome, final, error, ui, calibration)


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


def _build_in_parallel(search: Search, model: str, out_dir: Path, common: dict, clock: Clock, ui: UI,
                       calibration: CalibrationJudge | None, executor: Executor) -> None:
    """Every candidate as a build task at once; then, in waves, the fallbacks of those that missed the budget."""
    from optkit.engine.run import build_cpus

    waiting = list(search.outcomes)
    while waiting:
        wave = [o for o in waiting if not o.candidate.fallback_for
                or next(b for b in search.outcomes if b.name == o.candidate.fallback_for).status != "pending"]
        if not wave:
            break
        waiting = [o for o in waiting if o not in wave]
        wave = [o for o in wave if not (o.candidate.fallback_for and _fallback_skip(search, o))]
        now, deadline = time.perf_counter(), clock.deadline(search)
        if now > deadline:  # a running Ray task is not stopped; no further wave starts
            for o in wave:
                o.status, o.why = "skipped", _too_little(deadline - now, o.name, None, clock.budget_s)
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
            _land(search, outcome, job, got, ui, calibration)


def _choose(outcomes: list[Outcome]) -> Outcome | None:
    timed = [o for o in outcomes if o.status == "built" and o.p50_ms is not None]
    if not timed:
        return None
    fastest = min(o.p50_ms for o in timed)
    ties = [o for o in timed if o.p50_ms <= fastest * (1 + NOISE)]
    return min(ties, key=lambda o: (o.candidate.simplicity, o.artifact.size_bytes(), o.p50_ms))
