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
from optkit.types.errors import OptkitError


try:  # typer >= 0.20 carries its own copy of click
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer, with click installed beside it
    from click import exceptions as click_exceptions  # type: ignore[no-redef]


# Every command: where it lives, and the one line `optkit --help` shows for it. Commands are imported only when
# one runs (or shows its own --help), so `optkit --help` imports no step, numpy or pydantic;
# tests/cli/test_help.py checks each line against the command's own docstring.
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("optkit.cli.export:export", "Export a PyTorch model to one self-contained ONNX file,..."),
    "simplify": ("optkit.cli.transforms:simplify", "Constant folding, shape inference and dead-node removal;..."),
    "fuse": ("optkit.cli.transforms:fuse", "Operator fusion (Conv+BN, transformer..."),
    "quantize": ("optkit.cli.transforms:quantize", "int8 (static QDQ / dynamic) or fp16 quantization with ONNX..."),
    "prune": ("optkit.cli.train:prune", "Remove channels (torch-pruning dependency graph) or zero..."),
    "distill": ("optkit.cli.train:distill", "Knowledge distillation: train a smaller student on the..."),
    "compile": ("optkit.cli.transforms:compile_cmd", "Build the artifact a runtime deploys: ONNX Runtime (tuned..."),
    "profile": ("optkit.cli.profile:profile", "Measure latency (p50/p90/p99, throughput) per batch size,..."),
    "report": ("optkit.cli.report:report", "Print the ledger of an artifact: every step from the original..."),
    "compare": ("optkit.cli.compare:compare", "Accuracy, p50/p90, throughput and size of several artifacts,..."),
    "debug": ("optkit.cli.debug:debug", "Rank layers by quantization error (SQNR, cosine; activations..."),
    "run": ("optkit.cli.run:run", "Run recipes: every step measured, gates judged (exit 3 if one..."),
    "optimize": ("optkit.cli.optimize:optimize", "Build ONNX Runtime and OpenVINO candidates (fp32, int8..."),
    "generate": ("optkit.cli.generate:generate", "Stream a causal language model's continuation of a prompt..."),
    "serve": ("optkit.cli.serve:serve", "Serve an artifact over KServe's Open Inference Protocol v2..."),
    "loadtest": ("optkit.cli.serve:loadtest", "Throughput and p50/p90/p99 under concurrent load; with an..."),
    "recipe": ("optkit.cli.recipe:recipe_app", "Recipe helpers: the JSON Schema for editors and linters."),
}


def load_command(name: str):
    """The click command ``name`` (a Typer function or sub-app), built from its module on first use."""
    from typer.main import CommandInfo, TyperInfo, get_command_from_info, get_group_from_info

    target = command_function(name)
    if isinstance(target, typer.Typer):
        return get_group_from_info(TyperInfo(target, name=name), pretty_exceptions_short=True,
                                   suggest_commands=True, rich_markup_mode=None)
    return get_command_from_info(CommandInfo(name=name, callback=target), pretty_exceptions_short=True,
                                 rich_markup_mode=None)


def command_function(name: str):
    """The Python function behind command ``name`` (tests read its signature)."""
    from optkit.types.lazy import load_dotted

    return load_dotted(COMMANDS[name][0])


def all_commands() -> dict:
    """Every command, loaded: name -> click command."""
    return {name: load_command(name) for name in COMMANDS}


class OptkitGroup(TyperGroup):
    """Maps optkit's errors to one stderr line and an exit code, for the real CLI and CliRunner alike; loads
    each command when it is used (``COMMANDS``)."""

    def list_commands(self, ctx) -> list[str]:
        return [*COMMANDS, *(n for n in super().list_commands(ctx) if n not in COMMANDS)]

    def get_command(self, ctx, cmd_name: str):
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx, args):
        """Click's lookup, with 'Did you mean ...?' from every command (loaded or not) on a typo."""
        click_resolve = getattr(super(), "_click_resolve_command", None) or super().resolve_command  # typer < 0.20: click's
        try:
            return click_resolve(ctx, args)
        except click_exceptions.UsageError as exc:
            from difflib import get_close_matches

            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches:
                exc.message = f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, matches))}?"
            raise

    def format_commands(self, ctx, formatter) -> None:
        """The command list from ``COMMANDS``' one-liners: no command is imported to show it."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])

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
                typer.echo(f"error: {message}{' ' if message.endswith('?') else '. '}See '{command} --help'", err=True)
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




def main() -> None:
    if sys.stdout is None or sys.stderr is None:  # started with a closed standard stream
        _fail_closed_stream()
    from optkit.types.noise import silence_third_party

    silence_third_party()  # before any library is imported: what they print at import is not about the model
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
