"""Command-line options generated from a step's pydantic ``Config``: one source of truth for options.

A command declares by hand only the options it words or groups differently (short flags, ``--x/--y``
pairs, singular flags for lists, paths); ``config_options`` appends every other field of the step's
``Config`` as an option with the field's name, type, default and description, and hands their values to
the command as ``config_extra``. A new config field is reachable from the command line, the recipe and
``--set`` without touching the CLI; ``tests/cli/test_option_parity.py`` checks it for every step.
"""
from __future__ import annotations

import functools
import inspect
import typing
from typing import Annotated, Any, Callable, Literal, Optional

import typer

# config fields a command declares under another parameter name (the flag users know)
ALIASES = {"dynamic_axes": "dynamic_axis"}


def _option(name: str, field) -> inspect.Parameter:
    flag = "--" + name.replace("_", "-")
    annotation = field.annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    text = (field.description or name.replace("_", " ")).rstrip(".")
    helptext = text[:1].upper() + text[1:] + "."
    optional = origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    base_origin, base_args = typing.get_origin(base), typing.get_args(base)
    default = field.default
    if base_origin is Literal:
        helptext += f" One of: {' | '.join(map(str, base_args))}."
        kind, option = str, typer.Option(flag, help=helptext)
    elif base_origin is list:
        kind = list[base_args[0] if base_args else str]
        option = typer.Option(flag, help=helptext + " Repeat for more.", metavar="VALUE")
        default = None if not default else list(default)
    elif base is bool:
        kind, option = bool, typer.Option(f"{flag}/--no-{flag[2:]}", help=helptext)
    else:
        kind, option = base, typer.Option(flag, help=helptext)
    if optional or default is None:
        kind = Optional[kind]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option])


def config_options(step: str) -> Callable[[Callable], Callable]:
    """Append every field of ``step``'s Config the command does not declare; their values reach the command
    as ``config_extra`` (a dict, None values dropped: the Config's default then applies)."""
    def wrap(command: Callable) -> Callable:
        from optkit.steps.base import step_class

        sig = inspect.signature(command, eval_str=True)  # the command module's names, not this one's
        declared = {ALIASES.get(n, n) for n in sig.parameters} | {n for n, a in ALIASES.items() if a in sig.parameters}
        extra = [_option(n, f) for n, f in step_class(step).Config.model_fields.items() if n not in declared]
        kept = [p for p in sig.parameters.values() if p.name != "config_extra"]

        @functools.wraps(command)
        def generated(*args: Any, **kwargs: Any):
            values = {p.name: kwargs.pop(p.name) for p in extra if p.name in kwargs}
            return command(*args, **kwargs, config_extra={k: v for k, v in values.items() if v is not None})

        # Typer calls a command with keywords only, so every parameter can be keyword-only
        params = [*[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept], *extra]
        generated.__signature__ = sig.replace(parameters=params)
        generated.__annotations__ = {p.name: p.annotation for p in params}  # resolved: read with this module's globals
        return generated
    return wrap
