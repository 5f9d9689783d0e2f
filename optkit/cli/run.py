"""optkit run RECIPE.yaml"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple, Optional

import typer

from optkit.cli import options as o

if TYPE_CHECKING:
    from optkit.engine.executor import Executor
    from optkit.engine.outcome import RecipeOutcome
    from optkit.engine.recipe import Recipe
    from optkit.types.ledger import RunReport
    from optkit.types.ui import UI


def run(
    recipes: Annotated[list[Path], typer.Argument(help="Recipe YAML (see recipes/); several run one after another, or at once with --executor ray.")],
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a recipe value: KEY.PATH=VALUE (YAML), e.g. steps.quantize.method=entropy, "
                      "measure.budget_s=0.2. Repeatable.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the recipe and print the resolved plan; run nothing.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every step even if its cached result is still valid.")] = False,
    retime: Annotated[bool, typer.Option("--retime", help="Time the ledger again even when every step came from the "
                                                           "cache and the last timings still apply.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing output_dir that holds files optkit did not write.")] = False,
    executor: o.Executor = "local",
    ray_address: o.RayAddress = None,
    json_out: o.Json = False,
    markdown: o.Markdown = False,
) -> None:
    """Run recipes: every step measured, gates judged (exit 3 if one fails), reports and manifest in each output_dir."""
    from optkit.cli.common import print_json
    from optkit.engine.executors import make_executor
    from optkit.engine.recipe import load_recipe, plan
    from optkit.types.errors import UsageError
    from optkit.types.ui import UI

    loaded = [(*load_recipe(path, overrides=set_), path.resolve()) for path in recipes]  # all checked first
    outs = [parsed.output_path(base).resolve() for parsed, base, _ in loaded]
    if len(set(outs)) < len(outs):
        raise UsageError("two of the recipes write to the same output_dir",
                         hint="Give each recipe its own output_dir (or --set output_dir=... one at a time)")
    if dry_run:
        plans = [{"recipe": str(path), "model": parsed.model, "output_dir": str(parsed.output_path(base)),
                  "seed": parsed.seed, "measure": parsed.measure.model_dump(),
                  "steps": [{"step": ps.step.name, "options": ps.config.model_dump(mode="json"),
                             "output": str(ps.output) if ps.output else None} for ps in plan(parsed, base)],
                  "gates": [g.model_dump(exclude_none=True) for g in parsed.gates]} for parsed, base, path in loaded]
        print_json(plans[0] if len(plans) == 1 else plans)
        return
    ui = UI()
    runner = make_executor(executor, ray_address, ui)
    try:
        if runner.parallel:
            done = _all_at_once(runner, loaded, ui, use_cache=not no_cache, force=force, retime=retime)
        else:
            done = []
            for parsed, base, path in loaded:
                try:
                    done.append(_one(parsed, base, path, ui, use_cache=not no_cache, force=force, retime=retime))
                except UsageError as exc:
                    if len(loaded) == 1:
                        raise
                    done.append(exc)
    finally:
        runner.close()
    _finish(ui, loaded, done, json_out, markdown)


class _Written(NamedTuple):
    """A recipe's outcome and what its report holds, as written into its output folder."""

    outcome: RecipeOutcome
    report: RunReport
    paths: list[Path]


def _one(recipe: Recipe, base: Path, path: Path, ui: UI, *, use_cache: bool, force: bool, retime: bool) -> _Written:
    """One recipe run and judged (engine), its reports written (report), its output folder held throughout."""
    from optkit.engine.outcome import run_and_judge
    from optkit.report.run import write_run_report
    from optkit.types.runfolder import run_output_dir

    with run_output_dir(recipe.output_path(base), force=force):
        outcome = run_and_judge(recipe, base, ui, use_cache=use_cache, retime=retime)
        return _Written(outcome, *write_run_report(outcome, path))


def _all_at_once(executor: Executor, loaded: list[tuple[Recipe, Path, Path]], ui: UI, *, use_cache: bool,
                 force: bool, retime: bool) -> list[_Written | Exception]:
    """Every recipe on a parallel executor (engine), each one's reports written (report), every output folder held
    for the whole run, as one run would."""
    import contextlib

    from optkit.engine.outcome import run_all_on
    from optkit.report.run import write_run_report
    from optkit.types.runfolder import run_output_dir

    with contextlib.ExitStack() as held:
        for recipe, base, _ in loaded:
            held.enter_context(run_output_dir(recipe.output_path(base), force=force))
        outcomes = run_all_on(executor, loaded, ui, use_cache=use_cache, retime=retime)
        return [got if isinstance(got, Exception) else _Written(got, *write_run_report(got, path))
                for got, (_, _, path) in zip(outcomes, loaded)]


def _finish(ui: UI, loaded: list[tuple[Recipe, Path, Path]], done: list[_Written | Exception], json_out: bool,
            markdown: bool) -> None:
    """Print every recipe's ledger, gates and reports; then exit as the worst of them: a bad input (2), a failed
    step (1), a failed gate (3)."""
    from optkit.cli.common import print_json, warn_slower
    from optkit.types.errors import GateError, OptkitError

    reports: list[dict[str, Any]] = []
    errors: list[OptkitError] = []
    gate_failures: list[GateError] = []
    for (parsed, _, path), written in zip(loaded, done):
        if isinstance(written, Exception):
            error = written if isinstance(written, OptkitError) else OptkitError(str(written))
            ui.warn(f"{path.name}: {error.one_line()}")
            errors.append(error)
            continue
        outcome = written.outcome
        reports.append(written.report.to_json())
        warn_slower(ui, outcome.rows)
        if not json_out:
            _print(ui, written, path, len(loaded), markdown)
        if outcome.error:
            errors.append(outcome.error)
        failed, gates = outcome.failed_gates, outcome.gates
        if failed:
            gate_failures.append(GateError(
                (f"{path.name}: " if len(loaded) > 1 else "") + f"{len(failed)} of {len(gates)} gate(s) failed: "
                + "; ".join(g.text for g in failed),
                hint=f"Artifacts and reports are kept in {outcome.out_dir} for inspection"))
    if json_out:
        print_json(reports[0] if len(loaded) == 1 and reports else reports)
    if errors:
        raise min(errors, key=lambda e: e.exit_code != 2)  # a bad input first: exit 2
    if gate_failures:
        raise gate_failures[0]


def _print(ui: UI, written: _Written, path: Path, recipes: int, markdown: bool) -> None:
    """One recipe's ledger, profiles, gates and where its reports are."""
    from optkit.cli.common import render_rows
    from optkit.report.ledger import render_profile

    outcome = written.outcome
    result = outcome.result
    if recipes > 1:
        ui.info(f"[bold]{path.name}[/]")
    if result.final:
        render_rows(ui, outcome.rows, result.final, markdown=markdown)
    if not markdown:
        for prof in result.profiles:
            render_profile(ui.out, prof)
    for gate in outcome.gates:
        ui.info(f"{'[green]✓ gate[/]' if gate.passed else '[red]✗ GATE FAILED[/]'} {gate.text}")
    cached = f", {len(result.cached)} of {len(outcome.recipe.steps)} steps from the cache" if result.cached else ""
    if result.timing_reused_from:
        cached += f", timings of {result.timing_reused_from}"
    ui.info(f"reports: {', '.join(p.name for p in written.paths)} in {outcome.out_dir} "
            f"({result.wall_time_s:.1f}s{cached})")
