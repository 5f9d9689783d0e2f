"""optkit run RECIPE.yaml"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optkit.cli import options as o


def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/).")],
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override a recipe value: KEY.PATH=VALUE (YAML), e.g. steps.quantize.method=entropy, "
                      "measure.budget_s=0.2. Repeatable.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the recipe and print the resolved plan; run nothing.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Rebuild every step even if its cached result is still valid.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing output_dir that holds files optkit did not write.")] = False,
    json_out: o.Json = False,
    markdown: o.Markdown = False,
) -> None:
    """Run a recipe: every step measured, gates judged (exit 3 if one fails), reports and manifest in its output_dir."""
    from optkit.cli.common import print_json, render_rows, warn_slower
    from optkit.engine.recipe import load_recipe, plan
    from optkit.report.ledger import render_profile
    from optkit.report.run import run_and_report
    from optkit.types.errors import GateError
    from optkit.types.ui import UI

    parsed, base = load_recipe(recipe, overrides=set_)
    if dry_run:
        steps = plan(parsed, base)
        print_json({"recipe": str(recipe), "model": parsed.model, "output_dir": str(parsed.output_path(base)),
                    "seed": parsed.seed, "measure": parsed.measure.model_dump(),
                    "steps": [{"step": ps.step.name, "options": ps.config.model_dump(mode="json"),
                               "output": str(ps.output) if ps.output else None} for ps in steps],
                    "gates": [g.model_dump(exclude_none=True) for g in parsed.gates]})
        return
    ui = UI()
    done = run_and_report(parsed, base, recipe.resolve(), ui, use_cache=not no_cache, force=force)
    result, rows, gates, report, out_dir, error = done.result, done.rows, done.gates, done.report, done.out_dir, done.error
    warn_slower(ui, rows)
    if json_out:
        print_json(report)
    else:
        if result.final:
            render_rows(ui, rows, result.final, markdown=markdown)
        if not markdown:
            for prof in result.profiles:
                render_profile(ui.out, prof)
        for gate in gates:
            ui.info(f"{'[green]✓ gate[/]' if gate['passed'] else '[red]✗ GATE FAILED[/]'} {gate['text']}")
        cached = f", {len(result.cached)} of {len(parsed.steps)} steps from the cache" if result.cached else ""
        ui.info(f"reports: {', '.join(p.name for p in done.paths)} in {out_dir} ({result.wall_time_s:.1f}s{cached})")
    if error:
        raise error
    failed = [g for g in gates if not g["passed"]]
    if failed:
        raise GateError(f"{len(failed)} of {len(gates)} gate(s) failed: " + "; ".join(g["text"] for g in failed),
                        hint=f"Artifacts and reports are kept in {out_dir} for inspection")
