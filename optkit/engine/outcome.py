"""A recipe run and judged: its steps (``collect_run``), its ledger, its gates. What ``optkit run`` (and the
torch.compile backend) get back as a ``RecipeOutcome``, to write (``report/run.py``) and print; nothing here writes a
report.

The ledger's rows (``types/ledger.ledger_rows``) are the chain with what was measured, which gates judge.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from optkit.engine.executor import Executor, Job, TaskRun
from optkit.engine.gates import evaluate
from optkit.engine.recipe import Recipe
from optkit.engine.run import RunResult, build_cpus, build_recipe, collect_run, ledger_pass
from optkit.engine.timing import LEDGER_TIMING_FILE, LedgerTiming
from optkit.types.errors import OptkitError, StepError, first_line
from optkit.types.ledger import GateResult, LedgerRow, ledger_rows
from optkit.types.ui import UI

RecipeToRun = tuple[Recipe, Path, Path]  # a recipe, its folder (relative paths resolve there), its file


@dataclass
class RecipeOutcome:
    """A recipe run with its verdicts: what ``optkit run`` writes and prints."""

    recipe: Recipe
    base: Path
    result: RunResult
    rows: list[LedgerRow]            # the ledger
    gates: list[GateResult]          # judged gates (none when a step failed)
    error: OptkitError | None = None  # the failed step's StepError, or None
    executor: str | None = None      # the parallel executor that ran it (its tasks below), None for a local run
    tasks: list[TaskRun] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return self.recipe.output_path(self.base)

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]


def judge_run(recipe: Recipe, base: Path, result: RunResult, error: OptkitError | None) -> RecipeOutcome:
    """Gates judged on a finished run's ledger (none when a step failed)."""
    rows = ledger_rows(result.final.chain(), result.ledger_latency) if result.final else []
    gates = [] if error else evaluate(recipe.gates, rows, result.outputs())
    return RecipeOutcome(recipe, base, result, rows, gates, error)


def run_and_judge(recipe: Recipe, base: Path, ui: UI, *, use_cache: bool,
                  retime: bool = False) -> RecipeOutcome:
    """Run a recipe (a failed step comes back in the outcome, for the report) and judge its gates on the ledger.
    The caller holds the output folder (``types.files.run_output_dir``) while it runs and writes."""
    result, error = collect_run(recipe, base, ui, use_cache=use_cache, retime=retime)
    return judge_run(recipe, base, result, error)


def run_all_on(executor: Executor, recipes: list[RecipeToRun], ui: UI, *, use_cache: bool,
               retime: bool = False) -> list[RecipeOutcome | Exception]:
    """Several recipes on a parallel executor: every recipe's steps as one build task, all at once; then each
    ledger's timing pass as a measurement task, one at a time; then each recipe's gates. A recipe whose build could
    not start (bad input) comes back as its error. The caller holds every output folder for the whole run."""
    names = [f"{i + 1}:{path.name}" for i, (_, _, path) in enumerate(recipes)]
    started = time.perf_counter()
    jobs = [Job(name, build_recipe, (recipe, str(base), use_cache), num_cpus=build_cpus(recipe, base))
            for name, (recipe, base, _) in zip(names, recipes)]
    ui.info(f"{executor.name}: building {len(jobs)} recipe(s) as parallel tasks")
    built = dict((job.name, got) for job, got in executor.builds(jobs))
    outcomes: list[RecipeOutcome | Exception] = []
    for name, (recipe, base, _) in zip(names, recipes):
        got = built[name]
        if isinstance(got, Exception):
            outcomes.append(got)
            continue
        result, error = got
        if error is None and result.final is not None:
            error = _time_ledger(executor, name, recipe, base, result,
                                 reuse=use_cache and not retime and len(result.cached) == len(recipe.steps))
        result.wall_time_s = time.perf_counter() - started
        outcome = judge_run(recipe, base, result, error)
        outcome.executor = executor.name
        outcome.tasks = [t for t in executor.timeline if t.name in (name, f"{name} ledger")]
        outcomes.append(outcome)
    return outcomes


def _time_ledger(executor: Executor, name: str, recipe: Recipe, base: Path, result: RunResult,
                 reuse: bool) -> OptkitError | None:
    """A built recipe's ledger pass as a measurement task: its figures into ``result``; the error that stopped it
    (the recipe's report says so; the others go on)."""
    try:
        timing: LedgerTiming | None = executor.measure(f"{name} ledger", ledger_pass, recipe, str(base),
                                                       result.final, reuse, num_cpus=max(1, recipe.measure.threads))
    except Exception as exc:  # noqa: BLE001 - the recipe's report says so; the others go on
        return exc if isinstance(exc, OptkitError) else StepError(f"timing the ledger: {first_line(exc)}")
    if timing is not None:
        result.ledger_latency, result.timing_reused_from = timing.latency, timing.reused_from
        store = recipe.output_path(base) / LEDGER_TIMING_FILE
        if store.is_file():
            result.written.append(store)
    return None
