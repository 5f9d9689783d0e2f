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
    from optkit.engine.run import run_recipe, tool_versions
    from optkit.types.errors import GateError, StepError
    from optkit.types.files import run_output_dir
    from optkit.engine.gates import evaluate
    from optkit.engine.recipe import load_recipe, plan
    from optkit.report.ledger import ledger_rows, render_profile
    from optkit.report.run import build_report, environment, write_outputs
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
    error = None
    out_dir = parsed.output_path(base)
    with run_output_dir(out_dir, force=force):
        try:
            result = run_recipe(parsed, base, ui, use_cache=not no_cache)
        except StepError as exc:
            result, error = getattr(exc, "result", None), exc
            if result is None:
                raise
        rows = ledger_rows(result.final.chain(), result.ledger_latency) if result.final else []
        gates = [] if error else [g.to_dict() for g in evaluate(parsed.gates, rows)]
        report = build_report(recipe_path=recipe.resolve(), rows=rows, profiles=result.profiles, gates=gates,
                              cached=result.cached, wall_time_s=result.wall_time_s,
                              env=environment(parsed.seed, tool_versions(all_backends=True)),
                              error=error.one_line() if error else None)
        paths = write_outputs(out_dir, report, result.written)
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
        ui.info(f"reports: {', '.join(p.name for p in paths)} in {out_dir} ({result.wall_time_s:.1f}s{cached})")
    if error:
        raise error
    failed = [g for g in gates if not g["passed"]]
    if failed:
        raise GateError(f"{len(failed)} of {len(gates)} gate(s) failed: " + "; ".join(g["text"] for g in failed),
                        hint=f"Artifacts and reports are kept in {out_dir} for inspection")
