"""The ``optkit`` command: a Typer app whose commands import their real work lazily.

Errors: every ``OptkitError`` is printed as one line on stderr and mapped to its exit code
(2 usage/input, 1 failed step, 3 failed gate). Set ``OPTKIT_DEBUG=1`` to see tracebacks.
"""
from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from optkit import __version__
from optkit.cli.export import export
from optkit.cli.profile import profile
from optkit.cli.recipe import recipe_app
from optkit.cli.report import report
from optkit.cli.run import run
from optkit.cli.compare import compare
from optkit.cli.debug import debug
from optkit.cli.train import distill, prune
from optkit.cli.transforms import compile_cmd, fuse, quantize, simplify
from optkit.core.errors import OptkitError


class OptkitGroup(TyperGroup):
    """Maps optkit's errors to one stderr line and an exit code, for the real CLI and CliRunner alike."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except OptkitError as exc:
            if os.environ.get("OPTKIT_DEBUG"):
                raise
            typer.echo(f"error: {exc.one_line()}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: nothing was written", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=OptkitGroup, name="optkit", no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Turn a trained PyTorch model into deploy artifacts, and measure what every step changed.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"optkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """optkit: export, optimize, compile and measure models."""


app.command("export")(export)
app.command("simplify")(simplify)
app.command("fuse")(fuse)
app.command("quantize")(quantize)
app.command("prune")(prune)
app.command("distill")(distill)
app.command("compile")(compile_cmd)
app.command("profile")(profile)
app.command("report")(report)
app.command("compare")(compare)
app.command("debug")(debug)
app.command("run")(run)
app.add_typer(recipe_app, name="recipe")


def main() -> None:
    sys.exit(app(prog_name="optkit", standalone_mode=True) or 0)
