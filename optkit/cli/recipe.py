"""optkit recipe schema"""
from __future__ import annotations

import typer

recipe_app = typer.Typer(help="Recipe helpers: the JSON Schema for editors and linters.", no_args_is_help=True,
                         rich_markup_mode=None)


@recipe_app.command("schema")
def schema() -> None:
    """Print the recipe JSON Schema (every step's options included), e.g. for YAML editor completion."""
    from optkit.cli.common import print_json
    from optkit.engine.recipe import json_schema

    print_json(json_schema())
