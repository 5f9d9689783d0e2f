"""The engine: plan a recipe, run its steps in order (``produce``: each product measured and written atomically),
reuse what the step cache holds, then time every row of the ledger in one interleaved pass.

Commands and ``optkit run`` both end here.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.engine.produce import Chain, EngineRun, Source, reuse, run_measuring, run_producing, seed
from optkit.engine.recipe import PlannedStep, Recipe, plan
from optkit.engine.setup import (check_outputs, checked_settings, data_for, import_factory_first, open_source,
                                 settings_of, with_metric)
from optkit.engine.timing import LEDGER_TIMING_FILE, LatencyRows, LedgerTiming, timed_ledger
from optkit.engine.versions import tool_versions
from optkit.eval.task_metric import resolve_metric
from optkit.types.artifact import Artifact, sidecar_path
from optkit.types.errors import StepError, UsageError
from optkit.types.runfolder import build_lock
from optkit.types.ledger import Profile
from optkit.types.ui import UI


@dataclass
class RunResult:
    final: Artifact | None
    profiles: list[Profile] = field(default_factory=list)
    wall_time_s: float = 0.0
    cached: list[int] = field(default_factory=list)  # indices of steps reused from the cache
    written: list[Path] = field(default_factory=list)  # every file of every step's output (built or reused)
    # the ledger's latency: one interleaved pass over every row of the final chain at the end of the run
    # (None for a row whose artifact could not be opened again); the sidecars keep step-time figures
    ledger_latency: LatencyRows | None = None
    timing_reused_from: str | None = None  # when the ledger's figures were measured, if an earlier run's were reused
    steps: list[PlannedStep] = field(default_factory=list)  # the recipe as planned (validated) for this run

    def outputs(self) -> dict[str, str]:
        """Each producing step's output path, by its index in the recipe (what a gate's ``steps[N]`` names)."""
        return {str(ps.index): str(ps.output.resolve()) for ps in self.steps if ps.output}


def run_recipe(recipe: Recipe, base: Path, ui: UI, *, use_cache: bool = False) -> RunResult:
    """Run the recipe's steps (what a command does); a failed step raises its ``StepError``."""
    result, error = collect_run(recipe, base, ui, use_cache=use_cache)
    if error is not None:
        raise error
    return result


class NotCached(Exception):
    """``collect_run(cache_only=True)`` met a step the cache cannot serve (nothing was built or measured)."""


def _prepare(recipe: Recipe, base: Path, ui: UI, steps: list[PlannedStep]) -> EngineRun:
    """Everything checked before a step runs: the source opened, every output path, the formats along the chain,
    each step's precheck, the task metric, the data and the measurement settings."""
    settings = settings_of(recipe)
    chain = Chain(artifact=open_source(recipe, base))
    check_outputs(recipe, steps, chain.artifact, ui)
    import_factory_first(chain.artifact)
    fmt, task = chain.artifact.format, chain.artifact.task
    for ps in steps:
        if fmt not in ps.step.input_formats(ps.config, task):
            raise UsageError(f"steps[{ps.index}] ({ps.step.name}) takes {' or '.join(ps.step.input_formats(ps.config, task))} models, "
                             f"but it would get {fmt}", hint="Reorder the steps or start from another model")
        fmt = ps.step.output_format(ps.config)[0] or fmt
    for ps in steps:
        ps.step.precheck(ps.config, chain.artifact, base)
    metric = resolve_metric(recipe.metric, base)  # a bad --metric is reported before the data is read
    data = data_for(chain.artifact, ui)
    settings = with_metric(checked_settings(settings, data, chain.artifact, ui), metric, chain.artifact, data)
    return EngineRun(recipe, base, ui, data, settings, chain)


@dataclass
class _Collector:
    """One pass over a planned recipe: each step reused from the cache or run, what it wrote collected."""

    run: EngineRun
    result: RunResult
    source: Source
    use_cache: bool
    cache_only: bool
    settings_facts: dict[str, Any]
    versions: dict[str, str]
    known: dict[str, Artifact] = field(default_factory=dict)  # this run's artifacts by digest, for the ledger pass

    def key(self, ps: PlannedStep) -> str | None:
        from optkit.engine import cache

        if not self.use_cache:
            return None
        return cache.step_key(step=ps.step.name, options=ps.config.model_dump(mode="json"),
                              parent=self.run.chain.artifact, settings=self.settings_facts,
                              seed=self.run.recipe.seed, versions=self.versions, base=self.run.base)

    def producing(self, ps: PlannedStep, output: Path, key: str | None) -> None:
        run = self.run
        with build_lock(output.parent) if key else contextlib.nullcontext():
            if key and reuse(run, ps, output, key):
                self.result.cached.append(ps.index)
            elif self.cache_only:
                raise NotCached(ps.step.name)
            else:
                self.source.prepare()
                first = self.source.source
                if first.record:
                    self.known.setdefault(first.record.sha256, first)
                seed(run.recipe.seed + ps.index)
                run_producing(run, ps, output, cache_key=key)
        final = run.chain.artifact
        self.result.final = final
        self.result.written += _files_of(final)
        if final.record is not None:
            self.known[final.record.sha256] = final

    def measuring(self, ps: PlannedStep, key: str | None) -> None:
        from optkit.engine import cache

        run, ui = self.run, self.run.ui
        stored = _profile_path(run.recipe, run.base, ps)
        profile, why = cache.lookup_profile(stored, key) if key else (None, None)
        if profile is not None:
            ui.info(f"[cyan]↺[/] {ps.step.name}: reused {stored.name} from the cache")
            self.result.cached.append(ps.index)
        elif self.cache_only:
            raise NotCached(ps.step.name)
        else:
            if why:
                ui.warn(f"{ps.step.name}: cached {stored.name} not reused ({why}); measuring again")
            self.source.prepare()
            profile = run_measuring(run, ps)
            if key:
                from optkit.types.files import write_json

                write_json(stored, cache.profile_entry(profile, key))
        if key:
            self.result.written.append(stored)
        self.result.profiles.append(profile)

    def time_ledger(self, retime: bool) -> None:
        """The ledger's one interleaved pass (or, with the cache, the last pass's figures when nothing changed)."""
        run, result = self.run, self.result
        if result.final is None or not run.settings.enabled:
            return
        store = run.recipe.output_path(run.base) / LEDGER_TIMING_FILE if self.use_cache else None
        timing = timed_ledger(result.final, self.known, run.data, run.settings, run.ui, store=store,
                              reuse=not retime and len(result.cached) == len(result.steps))
        result.ledger_latency, result.timing_reused_from = timing.latency, timing.reused_from
        if store is not None and store.is_file():
            result.written.append(store)


def collect_run(recipe: Recipe, base: Path, ui: UI, *, use_cache: bool = False, ledger_timing: bool = True,
                retime: bool = False, cache_only: bool = False,
                planned: list[PlannedStep] | None = None) -> tuple[RunResult, StepError | None]:
    """Run the recipe's steps; with ``use_cache`` (``optkit run``) a step whose inputs did not change is reused;
    ``ledger_timing``: time every row again in one interleaved pass at the end (optimize times its own way); with
    ``use_cache``, when every step came from the cache, the last pass's figures are reused unless ``retime``;
    ``cache_only``: raise ``NotCached`` at the first step the cache cannot serve, before anything is built;
    ``planned``: the recipe's steps as the caller already planned them (else planned here).

    A failed step ends the run and comes back beside what was finished before it (for the report), not raised;
    a bad recipe or input is raised before anything runs."""
    started = time.perf_counter()
    steps = planned if planned is not None else plan(recipe, base)  # every step and option validated first
    run = _prepare(recipe, base, ui, steps)
    settings_facts = {**recipe.measure.model_dump(mode="json"), "eval_batch_size": run.settings.eval_batch_size}
    if run.settings.metric is not None and recipe.metric is not None:  # what every accuracy budget judged on
        settings_facts["metric"] = {"spec": run.settings.metric.spec, "digest": run.settings.metric.digest}
    result = RunResult(final=None, steps=steps)
    collector = _Collector(run, result, Source(run, any(ps.output is not None for ps in steps)), use_cache,
                           cache_only, settings_facts, tool_versions(all_backends=True) if use_cache else {})
    try:
        for ps in steps:
            ui.info(f"[bold]{ps.step.name}[/]: {ps.step.summary}")
            key = collector.key(ps)
            if ps.output is not None:
                collector.producing(ps, ps.output, key)
            else:
                collector.measuring(ps, key)
        if ledger_timing:
            collector.time_ledger(retime)
    except StepError as exc:
        result.final = run.chain.artifact if run.chain.artifact.record else result.final
        result.wall_time_s = time.perf_counter() - started
        return result, exc
    result.wall_time_s = time.perf_counter() - started
    return result, None


def _files_of(artifact: Artifact) -> list[Path]:
    """An artifact's files, its sidecar and its reference outputs: what a manifest lists for it."""
    files = [*artifact.files(), sidecar_path(artifact.path)]
    if artifact.reference and Path(artifact.reference["path"]).parent == artifact.path.parent:
        files.append(Path(artifact.reference["path"]))
    return files


def _profile_path(recipe: Recipe, base: Path, ps: PlannedStep) -> Path:
    return recipe.output_path(base) / f"{ps.index:02d}_{ps.step.name}.json"


def build_cpus(recipe: Recipe, base: Path, planned: list[PlannedStep] | None = None) -> int:
    """CPUs a build of the recipe keeps busy: the most any of its steps does (its steps run one after another)."""
    steps = planned if planned is not None else plan(recipe, base)
    return max((ps.step.num_cpus(ps.config) for ps in steps if ps.output is not None), default=1)


def build_recipe(recipe: Recipe, base: str, use_cache: bool) -> tuple[RunResult, StepError | None]:
    """A recipe's steps without the ledger's timing pass, where an executor puts it (a Ray worker, say); the pass
    is ``ledger_pass``, run apart as a measurement."""
    return collect_run(recipe, Path(base), UI(quiet=True), use_cache=use_cache, ledger_timing=False)


def ledger_pass(recipe: Recipe, base: str, final: Artifact, reuse: bool = False) -> LedgerTiming | None:
    """The ledger's one interleaved timing pass over a finished run's rows, on its own: what ``collect_run`` does
    at its end, with the same data and settings (None when the recipe measures nothing); ``reuse``: every step came
    from the cache, so the last pass's figures may serve."""
    ui = UI(quiet=True)
    settings = settings_of(recipe)
    if not settings.enabled:
        return None
    source = open_source(recipe, Path(base))
    import_factory_first(source)
    data = data_for(source, ui)
    return timed_ledger(final, {}, data, checked_settings(settings, data, source, ui), ui,
                        store=recipe.output_path(Path(base)) / LEDGER_TIMING_FILE, reuse=reuse)
