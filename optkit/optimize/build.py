"""Building the candidates: each a recipe run with the step cache on, where the executor puts it, then judged here.

The local executor builds them one after another, each in a process of its own that is stopped at the deadline (a
candidate the step cache serves whole is read in this process: the executor tries ``Job.probe`` first). The Ray
executor builds them as parallel tasks (a fallback only once the candidate it stands in for missed the budget).
Every target's primary candidates are built before any fallback, and every build ends by one deadline
(``Clock``); a candidate with too little time left is skipped, saying how much was left.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from optkit.engine.executor import Executor, Job, Stopped
from optkit.engine.recipe import Recipe
from optkit.optimize.clock import Clock, StopTimes, too_little
from optkit.optimize.judge import CalibrationJudge, judge
from optkit.optimize.model import BuildOutcome, CandidateSettings, Outcome, Search
from optkit.optimize.space import CandidateRecipe
from optkit.types.artifact import Artifact
from optkit.types.errors import OptkitError, StepError, first_line
from optkit.types.ui import UI

StepEntries = list[dict[str, Any]]  # a recipe's steps as YAML gives them


def candidate_recipe(model: str, out: Path, steps: StepEntries, settings: CandidateSettings) -> Recipe:
    return Recipe.model_validate(settings.recipe(model, steps, output_dir=out))


def build_candidate(model: str, out: str, steps: StepEntries, settings: CandidateSettings, base: str,
                    cache_only: bool = False) -> BuildOutcome:
    """One candidate's recipe run, where an executor puts it (a build process of its own, a Ray worker): what the
    driver needs back. ``cache_only``: ``engine.run.NotCached`` unless every step comes from the cache."""
    from optkit.engine.run import collect_run

    t0 = time.perf_counter()
    try:  # ranked by one pass at the end, not by the step-time figures
        result, error = collect_run(candidate_recipe(model, Path(out), steps, settings), Path(base), UI(quiet=True),
                                    use_cache=True, ledger_timing=False, cache_only=cache_only)
    except OptkitError as exc:  # a candidate the input cannot take (e.g. ops OpenVINO cannot read)
        return BuildOutcome(None, exc, 0, time.perf_counter() - t0)
    final = result.final if error is None else None
    return BuildOutcome(str(final.path) if final is not None else None, error, len(result.cached),
                        time.perf_counter() - t0)


BuildArgs = tuple[str, str, StepEntries, CandidateSettings, str]  # build_candidate's: model, out, steps, settings, base


def _from_cache(args: BuildArgs) -> BuildOutcome | None:
    """A build's answer when the step cache serves every step of it, read in this process (a build process of its
    own costs a second or more to start: a rerun would pay it for every candidate); None when something must be
    built."""
    from optkit.engine.run import NotCached

    try:
        model, out, steps, settings, base = args
        return build_candidate(model, out, steps, settings, base, cache_only=True)
    except NotCached:
        return None


def _folders(steps: StepEntries, out: Path) -> list[Path]:
    """The folders a candidate's build writes into: its own, and the shared export's."""
    return [out, *sorted({Path(s["output"]).parent for s in steps if s.get("output")} - {out})]


@dataclass
class Builder:
    """Builds the search's candidates from ``model`` (MODEL, when a shared export comes first; else the fp32 ONNX
    file) with the recipe keys ``settings``, judges each as it lands."""

    search: Search
    model: str
    out_dir: Path
    settings: CandidateSettings
    clock: Clock
    ui: UI
    calibration: CalibrationJudge | None
    executor: Executor

    def steps(self, cand: CandidateRecipe) -> StepEntries:
        return [*self.search.prefix,
                *({"name": name, "options": options} for s in cand.steps for name, options in s.items())]

    def job(self, outcome: Outcome, num_cpus: float = 1.0) -> Job:
        out = self.out_dir / "candidates" / outcome.name
        args: BuildArgs = (self.model, str(out), self.steps(outcome.candidate), self.settings, str(Path.cwd()))
        return Job(outcome.name, build_candidate, args, num_cpus, probe=partial(_from_cache, args))

    def fallback_skip(self, outcome: Outcome) -> bool:
        """A fallback (a costlier search for the same idea) is built only when the simpler one missed the budget."""
        base = self.search.outcome(str(outcome.candidate.fallback_for))
        if base.status == "rejected":
            return False
        outcome.status = "skipped"
        outcome.why = base.why if base.status == "skipped" else (
            f"not needed: {base.name} is within budget" if base.status == "built" else
            f"{base.name} was stopped at the time budget" if base.status == "stopped" else f"{base.name} failed")
        return True

    def one(self, outcome: Outcome, k: int, stops: StopTimes) -> None:
        """One candidate, built where the executor chooses and stopped at the deadline, then judged here."""
        cand, n = outcome.candidate, len(self.search.outcomes)
        if cand.fallback_for and self.fallback_skip(outcome):
            return
        now, deadline = time.perf_counter(), self.clock.deadline(self.search)
        job = self.job(outcome)
        steps = job.args[2]
        key = stops.key(cand.name, steps)
        why = too_little(deadline - now, cand.name, stops.get(key), self.clock.budget_s)
        if why is not None:
            outcome.status, outcome.why = "skipped", why
            self.ui.info(f"  [yellow]–[/] {cand.name}: skipped, {why}")
            return
        best = min(self.search.built(), key=_p50_at_build, default=None)
        self.ui.info(f"[bold]candidate {k} of {n}[/]: {cand.name} ({cand.what})"
                     + (f"; best so far {best.name}" if best else "")
                     + f"; {now - self.clock.started:.0f}s of the {self.clock.budget_s:.0f}s time budget used")
        try:
            got = self.executor.build(job, deadline, cleanup=_folders(steps, self.out_dir / "candidates" / cand.name))
        except Stopped as stop:
            outcome.seconds = stop.seconds
            outcome.status, outcome.why = "stopped", f"stopped at the time budget (ran {stop.seconds:.0f}s)"
            stops.set(key, stop.seconds)
            self.ui.info(f"  [yellow]■[/] {cand.name}: {outcome.why}")
            return
        except Exception as exc:  # noqa: BLE001 - its process crashed or its build raised: a failed candidate
            outcome.seconds = time.perf_counter() - now
            self.settle(outcome, None, exc)
            return
        outcome.seconds = time.perf_counter() - now
        stops.set(key, None)
        self.land(outcome, job, got)

    def land(self, outcome: Outcome, job: Job, got: BuildOutcome) -> None:
        """A build's answer, from its process or task: the artifact reopened from the step cache and checked
        against its sidecar, then judged."""
        from optkit.backends.opening import open_artifact

        final, error = None, got.error
        if error is None:
            try:
                final = open_artifact(str(got.final))
                if final.record is None or final.digest() != final.record.sha256:
                    raise StepError(f"{job.name}: the artifact its build wrote does not match its sidecar")
            except OptkitError as exc:
                error = exc
        outcome.cached = error is None and got.cached == len(job.args[2])
        self.settle(outcome, final, error)

    def settle(self, outcome: Outcome, final: Artifact | None, error: Exception | None) -> None:
        """A candidate's build is over: rejected, failed, or built and judged against the original."""
        name = outcome.name
        if error is not None or final is None:
            error = error or StepError(f"{name}: its build made no artifact")
            outcome.status = "rejected" if isinstance(error, StepError) else "failed"
            outcome.why = error.one_line() if isinstance(error, OptkitError) else first_line(error)
            self.ui.info(f"  [yellow]✗[/] {name}: {outcome.why}")
            return
        outcome.artifact, outcome.record = final, final.record
        outcome.status = "built"
        try:
            judge(outcome, self.search.budget, self.calibration)
        except OptkitError as exc:  # outputs the calibration split cannot be judged on
            outcome.status, outcome.why = "failed", exc.one_line()
        mark = "[green]✓[/]" if outcome.status == "built" else "[yellow]✗[/]"
        judged = ", ".join(v.text() for v in outcome.verdicts) or "not judged"
        self.ui.info(f"  {mark} {name}: {judged}{'; ' + outcome.why if outcome.why else ''} "
                     f"({'cached' if outcome.cached else f'{outcome.seconds:.1f}s'})")

    def in_order(self, stops: StopTimes) -> None:
        """Every candidate in turn (``build_order``), each by the deadline."""
        for k, outcome in enumerate(self.search.outcomes, 1):
            self.one(outcome, k, stops)

    def in_parallel(self) -> None:
        """Every candidate as a build task at once; then, in waves, the fallbacks of those that missed the budget."""
        waiting = list(self.search.outcomes)
        while waiting:
            wave = [o for o in waiting if not o.candidate.fallback_for
                    or self.search.outcome(o.candidate.fallback_for).status != "pending"]
            if not wave:
                break
            waiting = [o for o in waiting if o not in wave]
            wave = [o for o in wave if not (o.candidate.fallback_for and self.fallback_skip(o))]
            now, deadline = time.perf_counter(), self.clock.deadline(self.search)
            if now > deadline:  # a running Ray task is not stopped; no further wave starts
                for o in wave:
                    o.status, o.why = "skipped", too_little(deadline - now, o.name, None, self.clock.budget_s)
                continue
            if wave:
                self.wave(wave)

    def wave(self, wave: list[Outcome]) -> None:
        from optkit.engine.run import build_cpus

        self.ui.info(f"optimize: building {len(wave)} candidate(s) as {self.executor.name} tasks: "
                     f"{', '.join(o.name for o in wave)}")
        jobs = []
        for o in wave:
            out = self.out_dir / "candidates" / o.name
            try:
                cpus = build_cpus(candidate_recipe(self.model, out, self.steps(o.candidate), self.settings), Path.cwd())
            except OptkitError:  # the build itself will say what is wrong with the candidate, as a local one would
                cpus = 1
            jobs.append(self.job(o, cpus))
        by_name = {o.name: o for o in wave}
        for job, got in self.executor.builds(jobs):
            outcome = by_name[job.name]
            if isinstance(got, Exception):
                self.settle(outcome, None, got)
                continue
            outcome.seconds = got.seconds
            self.land(outcome, job, got)


def _p50_at_build(outcome: Outcome) -> float:
    """A built candidate's p50 as its build measured it (the step-time figure): only for the progress line."""
    latency = outcome.record.measured.latency_at() if outcome.record else None
    return latency.p50_ms if latency else float("inf")
