"""Command-line options generated from a step's pydantic ``Config``: one source of truth for options.

A step command declares only what belongs to the command (the MODEL, ``-o``, ``--weights``, the
evaluation and measurement options); ``config_options`` adds every field of the step's ``Config`` as an
option with the field's name, type, default and description, and hands their values to the command as
``config_extra``. ``FLAGS`` holds the few fields the command line spells its own way. A new config field
is reachable from the command line, the recipe and ``--set`` without touching the CLI;
``tests/cli/test_option_parity.py`` checks it for every step.

A list option takes its values repeated or comma-separated (``--exclude Conv --exclude Gemm`` or
``--exclude Conv,Gemm``). A key a Config renamed (its ``RENAMED``) stays a hidden flag that says it is
deprecated, once, and still works.

``option_for`` and ``unset_option_for`` make one field's option for commands that wire their options themselves
(``optkit serve``'s come from ``types/serve_config.ServeConfig``).
"""
from __future__ import annotations

import functools
import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, NamedTuple, Optional

import typer
from pydantic.fields import FieldInfo

from optkit.cli.options import split_values

Parse = Callable[[Any], Any]  # a command-line value -> the config value


@dataclass(frozen=True)
class Flag:
    """How the command line spells one config field, where it differs from ``--field-name``."""

    spelling: str  # '--yes/--no' for a bool; the singular, repeatable flag for a list
    note: str = ""  # what the command line adds to the field's description
    parse: Optional[Parse] = None  # command-line value -> config value
    default: Any = None  # command-line default of a field a recipe must give (None: the field's own)
    unset: bool = False  # send the value only when given (the Config tells a given value from its default)


def _none_is_empty(axes: list[str]) -> list[str]:
    return [] if [a.lower() for a in axes] == ["none"] else axes


# the flags users know; a key is 'field' or, for a field only one step has, 'step.field'
FLAGS: dict[str, Flag] = {
    "per_channel": Flag("--per-channel/--per-tensor"),
    "global_pruning": Flag("--global/--uniform"),
    "dynamic_batch": Flag("--dynamic-batch/--static-batch"),
    "dynamic_axes": Flag("--dynamic-axis", note="'none': only the batch is dynamic.", parse=_none_is_empty),
    "compile.target": Flag("--target", default="ort-cpu"),
    # given, it also turns on quantize's guard and compile's accuracy control (their default)
    "max_drop": Flag("--max-drop", unset=True),
}


def flag_of(step: str, field: str) -> Optional[Flag]:
    return FLAGS.get(f"{step}.{field}") or FLAGS.get(field)


def flag_name(step: str, field: str) -> str:
    """The flag that sets ``field`` on the command line (the first of a ``--yes/--no`` pair)."""
    flag = flag_of(step, field)
    return flag.spelling.split("/")[0] if flag else "--" + field.replace("_", "-")


class ConfigOption(NamedTuple):
    """One Config field as a command-line option."""

    param: inspect.Parameter  # what Typer reads: the name, the type and typer.Option(...) in its annotation
    parse: Optional[Parse]  # what turns the command-line value into the config value (None: taken as given)


def _bounds(field: FieldInfo) -> str:
    """' In (0, 1).' for a field bounded on both sides."""
    low = high = None
    for rule in field.metadata:
        for attr, text in (("ge", "[{}"), ("gt", "({}")):
            if getattr(rule, attr, None) is not None:
                low = text.format(getattr(rule, attr))
        for attr, text in (("le", "{}]"), ("lt", "{})")):
            if getattr(rule, attr, None) is not None:
                high = text.format(getattr(rule, attr))
    return f" In {low}, {high}." if low and high else ""


# names spelt in lower case even at the start of a sentence
_LOWER = {"ort", "inc", "openvino", "tensorrt", "onnxruntime", "onnxslim", "onnxsim", "torch", "tflite"}


def _sentence(text: str) -> str:
    """A description as a help sentence; a first word like 'fp16:', 'torch.onnx' or 'openvino' keeps its case."""
    first = text.split(" ", 1)[0].rstrip(":,")
    keep = first in _LOWER or not first.replace("-", "").isalpha()
    return (text if keep else text[:1].upper() + text[1:]).rstrip(".") + "."


def _list_parser(flag: str, item: type, then: Optional[Parse]) -> Parse:
    """A list option's values, repeated or comma-separated, as a list of ``item`` (then ``then``, a Flag's parse)."""
    def parse(values: list[str]) -> Any:
        items = split_values(values, flag, item)
        return then(items) if then else items
    return parse


def option_for(step: str, name: str, field: FieldInfo) -> ConfigOption:
    """The option for one field of ``step``'s Config (``step`` picks its ``FLAGS``): spelling, type, default and help
    from the field, bounds said in the help."""
    flag = flag_of(step, name)
    spelling = flag.spelling if flag else "--" + name.replace("_", "-")
    annotation = field.annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    helptext = _sentence(field.description or name.replace("_", " "))
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if optional else annotation
    base_origin, base_args = typing.get_origin(base), typing.get_args(base)
    default = field.default if not field.is_required() else inspect.Parameter.empty
    if flag and flag.default is not None:
        default = flag.default
    helptext += _bounds(field)
    parse = flag.parse if flag else None
    kind: Any  # the option's type for Typer: a class, a list[...] or an Optional[...]
    if base_origin is Literal:
        helptext += f" One of: {' | '.join(map(str, base_args))}."
        kind, metavar = str, None
    elif base_origin is list:
        item = base_args[0] if base_args else str
        kind, metavar = list[str], "VALUE"  # ints too: '1,8' is split before it is converted
        helptext += " Repeat or separate with commas for more."
        default = [str(v) for v in default] if isinstance(default, (list, tuple)) and default else None
        parse = _list_parser(spelling, item, parse)
    elif base is bool:
        kind, metavar = bool, None
        if "/" not in spelling:
            spelling = f"{spelling}/--no-{spelling[2:]}"
    else:
        kind, metavar = base, None
    if flag and flag.note:
        helptext += " " + flag.note
    if flag and flag.unset and default is not inspect.Parameter.empty:
        if default is not None:
            helptext += f" Default: {default:g}." if isinstance(default, float) else f" Default: {default}."
        default = None
    if optional or default is None:
        kind = Optional[kind]
    option = typer.Option(spelling, help=helptext, metavar=metavar)
    return ConfigOption(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                          annotation=Annotated[kind, option]), parse)


def unset_option_for(step: str, name: str, field: FieldInfo) -> ConfigOption:
    """``field``'s option left unset (None) unless given, so that values from elsewhere (a config file) stand where
    the command line says nothing: its default is said in the help, its bounds are Typer's range check (which
    Typer's help shows)."""
    param, parse = option_for(step, name, field)
    kind, info = typing.get_args(param.annotation)
    info.help = info.help.replace(_bounds(field), "")
    default = field.get_default()
    if isinstance(default, bool):
        info.help += f" Default: {'on' if default else 'off'}."
    elif default not in (None, []):
        info.help += f" Default: {default:g}." if isinstance(default, float) else f" Default: {default}."
    for rule in field.metadata:
        info.min = getattr(rule, "ge", info.min)
        info.max = getattr(rule, "le", info.max)
    return ConfigOption(param.replace(default=None, annotation=Annotated[Optional[kind], info]), parse)


def _renamed_option(step: str, old: str, new: inspect.Parameter) -> inspect.Parameter:
    """The hidden flag of a renamed key: the new option's type, no default."""
    kind = typing.get_args(new.annotation)[0]
    kind = kind if typing.get_origin(kind) in (typing.Union, types.UnionType) else Optional[kind]
    spelling = "--" + old.replace("_", "-")
    if typing.get_args(kind)[0] is bool:
        spelling = f"{spelling}/--no-{spelling[2:]}"
    option = typer.Option(spelling, hidden=True, help=f"Deprecated: use {flag_name(step, new.name)}.")
    return inspect.Parameter(old, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind, option])


def config_options(step: str, fields: tuple[str, ...] | None = None) -> Callable[[Callable], Callable]:
    """Add every field of ``step``'s Config (or only ``fields``) as an option, unless the command has a parameter
    of that name (distill's model is ``--teacher``); their values reach the command as ``config_extra``: a dict
    without the options left unset, so the Config's defaults apply. The generated options come before
    ``--eval-data``; the hidden flags of renamed keys come last."""
    def wrap(command: Callable) -> Callable:
        from optkit.steps.base import step_class

        sig = inspect.signature(command, eval_str=True)  # the command module's names, not this one's
        config = step_class(step).Config
        own = inspect.get_annotations(config)  # the step's own fields first, then shared ones (training, tolerances)
        names = sorted((n for n in config.model_fields if n not in sig.parameters and (fields is None or n in fields)),
                       key=lambda n: n not in own)
        made = {n: option_for(step, n, config.model_fields[n]) for n in names}
        extra = [param for param, _ in made.values()]
        parsers = {n: parse for n, (_, parse) in made.items() if parse}
        renamed = {old: new for old, new in getattr(config, "RENAMED", {}).items()
                   if new in made and old not in sig.parameters}
        hidden = [_renamed_option(step, old, made[new][0]) for old, new in renamed.items()]

        @functools.wraps(command)
        def generated(*args: Any, **kwargs: Any):
            from optkit.steps.base import deprecated

            values = {p.name: kwargs.pop(p.name) for p in extra if p.name in kwargs}
            given = {k: parsers[k](v) if k in parsers else v for k, v in values.items() if v is not None and v != []}
            for old, new in renamed.items():
                value = kwargs.pop(old, None)
                if value is not None:  # the Config maps the old key (and what it meant) itself
                    deprecated(old, new, f"{'--' + old.replace('_', '-')} is deprecated; use {flag_name(step, new)}")
                    given[old] = parsers[new](value) if new in parsers else value
            return command(*args, **kwargs, config_extra=given)

        # Typer calls a command with keywords only, so every parameter can be keyword-only
        kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values() if p.name != "config_extra"]
        at = next((i for i, p in enumerate(kept) if p.name == "eval_data"), len(kept))
        params = [*kept[:at], *extra, *kept[at:], *hidden]
        # inspect's __signature__ protocol, which typeshed does not declare on functions
        generated.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        generated.__annotations__ = {p.name: p.annotation for p in params}  # resolved: read with this module's globals
        return generated
    return wrap
