"""optkit run RECIPE.yaml"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optkit.cli import options as o


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
    from optkit.engine.executor import make_executor
    from optkit.engine.recipe import load_recipe, plan
    from optkit.report.run import run_all_on, run_and_report
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
            done = run_all_on(runner, loaded, ui, use_cache=not no_cache, force=force, retime=retime)
        else:
            done = []
            for parsed, base, path in loaded:
                try:
                    done.append(run_and_report(parsed, base, path, ui, use_cache=not no_cache, force=force,
                                               retime=retime))
                except UsageError as exc:
                    if len(loaded) == 1:
                        raise
                    done.append(exc)
    finally:
        runner.close()
    _finish(ui, loaded, done, json_out, markdown)


def _finish(ui, loaded, done, json_out: bool, markdown: bool) -> None:
    """Print every recipe's ledger, gates and reports; then exit as the worst of them: a bad input (2), a failed
    step (1), a failed gate (3)."""
    from optkit.cli.common import print_json, render_rows, warn_slower
    from optkit.report.ledger import render_profile
    from optkit.types.errors import GateError, OptkitError

    reports, errors, gate_failures = [], [], []
    for (parsed, _, path), outcome in zip(loaded, done):
        if isinstance(outcome, Exception):
            error = outcome if isinstance(outcome, OptkitError) else OptkitError(str(outcome))
            ui.warn(f"{path.name}: {error.one_line()}")
            errors.append(error)
            continue
        result, rows, gates = outcome.result, outcome.rows, outcome.gates
        reports.append(outcome.report.to_json())
        warn_slower(ui, rows)
        if not json_out:
            if len(loaded) > 1:
                ui.info(f"[bold]{path.name}[/]")
            if result.final:
                render_rows(ui, rows, result.final, markdown=markdown)
            if not markdown:
                for prof in result.profiles:
                    render_profile(ui.out, prof)
            for gate in gates:
                ui.info(f"{'[green]✓ gate[/]' if gate.passed else '[red]✗ GATE FAILED[/]'} {gate.text}")
            cached = f", {len(result.cached)} of {len(parsed.steps)} steps from the cache" if result.cached else ""
            if result.timing_reused_from:
                cached += f", timings of {result.timing_reused_from}"
            ui.info(f"reports: {', '.join(p.name for p in outcome.paths)} in {outcome.out_dir} "
                    f"({result.wall_time_s:.1f}s{cached})")
        if outcome.error:
            errors.append(outcome.error)
        failed = [g for g in gates if not g.passed]
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
