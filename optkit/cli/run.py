"""optkit run RECIPE.yaml"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optkit.cli import options as o


def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see recipes/).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate the recipe and print the resolved plan; run nothing.")] = False,
    json_out: o.Json = False,
    markdown: o.Markdown = False,
) -> None:
    """Run a recipe: its steps in order, each measured, then the ledger (and report.json in its output_dir)."""
    from optkit.cli.common import emit_ledger, print_json
    from optkit.core.engine import run_recipe, tool_versions
    from optkit.core.files import Staging, dumps_json
    from optkit.core.recipe import load_recipe, plan
    from optkit.core.report import ledger_rows, render_profile
    from optkit.core.ui import UI

    parsed, base = load_recipe(recipe)
    ui = UI()
    if dry_run:
        steps = plan(parsed, base)
        resolved = {"recipe": str(recipe), "model": parsed.model, "measure": parsed.measure.model_dump(),
                    "steps": [{"step": ps.step.name, "options": ps.config.model_dump(mode="json"),
                               "output": str(ps.output) if ps.output else None} for ps in steps]}
        print_json(resolved)
        return
    result = run_recipe(parsed, base, ui)
    rows = ledger_rows(result.final.chain()) if result.final else []
    report = {"recipe": str(recipe.resolve()), "steps": rows, "profiles": result.profiles,
              "wall_time_s": result.wall_time_s, "environment": tool_versions()}
    out_dir = (Path(parsed.output_dir) if Path(parsed.output_dir).is_absolute() else base / parsed.output_dir).resolve()
    with Staging() as stage:
        stage.write_text(out_dir / "report.json", dumps_json(report))
        stage.commit()
    if json_out:
        print_json(report)
        return
    if result.final:
        emit_ledger(ui, result.final, as_json=False, markdown=markdown)
    if not markdown:
        for prof in result.profiles:
            render_profile(ui.out, prof)
    ui.info(f"report: {out_dir / 'report.json'} ({result.wall_time_s:.1f}s)")
