"""The ``optkit`` command: a Typer app whose commands import their real work lazily.

Errors: every ``OptkitError`` is printed as one line on stderr and mapped to its exit code
(2 usage/input, 1 failed step, 3 failed gate). Set ``OPTKIT_DEBUG=1`` to see tracebacks.
"""
from __future__ import annotations

import contextlib
import os
import sys

import typer
from typer.core import TyperGroup

from optkit._version import __version__
from optkit.cli.export import export
from optkit.cli.optimize import optimize
from optkit.cli.profile import profile
from optkit.cli.recipe import recipe_app
from optkit.cli.report import report
from optkit.cli.run import run
from optkit.cli.serve import loadtest, serve
from optkit.cli.compare import compare
from optkit.cli.debug import debug
from optkit.cli.train import distill, prune
from optkit.cli.transforms import compile_cmd, fuse, quantize, simplify
from optkit.types.errors import OptkitError


try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer, with click installed beside it
    from click import exceptions as click_exceptions


class OptkitGroup(TyperGroup):
    """Maps optkit's errors to one stderr line and an exit code, for the real CLI and CliRunner alike."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Command-line usage errors (a bad option value, an unknown flag, a missing argument) are one
        ``error:`` line too, naming the command's help, instead of click's usage block."""
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = code if isinstance(code, int) else 0
        except click_exceptions.UsageError as exc:
            code = 2
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare 'optkit' or 'optkit recipe': the help
                typer.echo(exc.format_message())
            else:
                command = exc.ctx.command_path if exc.ctx is not None else "optkit"
                message = " ".join(exc.format_message().split()).rstrip(".")
                typer.echo(f"error: {message}. See '{command} --help'", err=True)
        except click_exceptions.ClickException as exc:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("interrupted: nothing was written", err=True)
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code)

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
        except OSError as exc:  # the file system or the environment, outside any step (a step's is a StepError)
            if os.environ.get("OPTKIT_DEBUG"):
                raise
            if _stdout_broken(exc):
                raise
            where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
            typer.echo(f"error: {exc.strerror or type(exc).__name__}{where}. Check the path and its permissions", err=True)
            raise typer.Exit(2) from None


def _stdout_broken(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.EPIPE, errno.ENOSPC, errno.EBADF, errno.EIO) and getattr(exc, "filename", None) is None


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
app.command("optimize")(optimize)
app.command("serve")(serve)
app.command("loadtest")(loadtest)
app.add_typer(recipe_app, name="recipe")


def main() -> None:
    if sys.stdout is None or sys.stderr is None:  # started with a closed standard stream
        _fail_closed_stream()
    try:
        try:
            code = app(prog_name="optkit", standalone_mode=True) or 0
        except SystemExit as exc:
            code = exc.code
        sys.stdout.flush()
    except OSError as exc:
        if not _stdout_broken(exc):
            raise
        _fail_output(exc)
    sys.exit(code)


def _fail_output(exc: OSError) -> None:
    """Standard output is full or gone (``> /dev/full``, a closed pipe): one line on stderr, exit 2,
    and nothing more written to it (the interpreter's final flush would fail again)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError):
        os.dup2(devnull, 1)
    with contextlib.suppress(OSError):
        sys.stderr.write(f"error: cannot write to standard output ({exc.strerror or exc}). "
                         "Redirect it to a writable file or pipe\n")
        sys.stderr.flush()
    os._exit(2)


def _fail_closed_stream() -> None:
    with contextlib.suppress(Exception):
        os.write(2, b"error: standard output is closed. Redirect it to a file or /dev/null instead of closing it\n")
    os._exit(2)
