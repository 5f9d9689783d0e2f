"""optkit serve ARTIFACT  and  optkit loadtest URL|ARTIFACT

``serve``'s batching options are generated from ``types/serve_config.ServeConfig`` with the step commands' option
generator (``cli/from_config``): a field there is an option here and a key of a recipe's ``serve:`` section. They
are left unset unless given, so a ``--config`` file's values stand where the command line says nothing.
"""
from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence

import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo

from optkit.cli import options as o
from optkit.cli.from_config import ConfigOption, Parse, unset_option_for
from optkit.types.errors import UsageError
from optkit.types.serve_config import BatchPolicy, ServeConfig, is_policy


def _sizes(values: Sequence[str] | str | None, option: str) -> tuple[int, ...]:
    """A list of sizes, repeated or comma-separated."""
    if not values:
        return ()
    text = values if isinstance(values, str) else ",".join(values)
    try:
        sizes = tuple(o.split_values(values, option, int))
    except UsageError:
        raise UsageError(f"{option} {text!r}: not a list of integers", hint=f"e.g. {option} 4,8") from None
    if not sizes or min(sizes) < 1:
        raise UsageError(f"{option} {text!r}: sizes must be at least 1", hint=f"e.g. {option} 4,8")
    return sizes


def _unset_option(name: str, field: FieldInfo) -> ConfigOption:
    """``field``'s option as from_config makes it, left unset unless given (a ``--config`` file's value stands
    otherwise); ``READ`` fields parsed here."""
    option = unset_option_for("serve", name, field)
    if name not in READ:
        return option
    parse, metavar = READ[name]
    info = typing.get_args(option.param.annotation)[1]
    info.metavar = metavar or info.metavar
    return ConfigOption(option.param, parse)


def _preferred_batch(values: Sequence[str]) -> list[int]:
    return list(_sizes(values, "--preferred-batch"))


def _batch_policy(value: str) -> str:
    if not is_policy(value):
        raise UsageError(f"--batch-policy {value!r}: not a policy", hint="--batch-policy adaptive or --batch-policy delay")
    return value


# fields the command line reads its own way (with the messages it has always given), and their metavar
READ: dict[str, tuple[Parse, Optional[str]]] = {"preferred_batch": (_preferred_batch, "N"),
                                                "batch_policy": (_batch_policy, None)}


def serve_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add every ``ServeConfig`` field as an option before ``--name``; the command gets those given as ``given``."""
    made = {n: _unset_option(n, f) for n, f in ServeConfig.model_fields.items()}
    parsers = {n: parse for n, (_, parse) in made.items() if parse}
    sig = inspect.signature(command, eval_str=True)

    @functools.wraps(command)
    def generated(**kwargs: Any) -> None:
        values = {n: kwargs.pop(n) for n in made}
        given = {n: parsers[n](v) if n in parsers else v for n, v in values.items() if v is not None}
        command(**kwargs, given=given)

    kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values() if p.name != "given"]
    at = next(i for i, p in enumerate(kept) if p.name == "name")
    params = [*kept[:at], *(param for param, _ in made.values()), *kept[at:]]
    # inspect's __signature__ protocol, which typeshed does not declare on functions
    generated.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    generated.__annotations__ = {p.name: p.annotation for p in params}
    return generated


def _config_error(exc: ValidationError, where: str) -> tuple[str, str]:
    """(the field's path, pydantic's message) of a ServeConfig's first error."""
    err = exc.errors()[0]
    return f"{where}{'.'.join(map(str, err['loc']))}", err["msg"]


def _serve_section(path: Path) -> ServeConfig:
    """The ``serve:`` section of a YAML file, validated (unknown keys and bad values named)."""
    import yaml

    from optkit.types.textio import RECIPE_CAP, load_yaml, read_text_capped

    try:
        raw = load_yaml(read_text_capped(path, RECIPE_CAP, "--config"))  # nesting and size limited, as recipes
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: cannot read it as YAML ({str(exc).splitlines()[0]})",
                         hint="Give a recipe or the serve.yaml optkit loadtest wrote") from None
    section = raw.get("serve") if isinstance(raw, dict) else None
    if not isinstance(section, dict):
        raise UsageError(f"--config {path}: no serve: section", hint="Give a recipe or the serve.yaml optkit loadtest wrote")
    try:
        return ServeConfig(**section)
    except ValidationError as exc:
        where, message = _config_error(exc, "serve.")
        raise UsageError(f"--config {path}: {where}: {message}",
                         hint=f"serve: takes {', '.join(ServeConfig.model_fields)}") from None


@serve_options
def serve(
    artifact: Annotated[str, typer.Argument(help="An artifact optkit wrote (.onnx, OpenVINO .xml, torch model).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: a free one, printed on start).")] = 8000,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML with a serve: section (a recipe, or the serve.yaml optkit loadtest writes); the options below override it.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in the URL (default: the file's stem).")] = None,
    given: Optional[dict[str, Any]] = None,
) -> None:
    """Serve an artifact over KServe's Open Inference Protocol v2 (REST), with a dynamic batcher and /metrics."""
    from optkit.serve.server import serve as run_server

    if not Path(artifact).exists() and ":" not in artifact:
        raise UsageError(f"{artifact}: no such file", hint="Give an artifact optkit wrote, e.g. optkit-out/.../03_quantize.onnx")
    base = _serve_section(config) if config else ServeConfig()
    try:
        settings = ServeConfig(**{**base.model_dump(exclude_unset=True), **(given or {})})
    except ValidationError as exc:  # Typer checked each option's range; what is left is a combination
        where, message = _config_error(exc, "--")
        raise UsageError(f"{where.replace('_', '-')}: {message}", hint="optkit serve --help lists the options") from None
    run_server(artifact, settings, host=host, port=port, name=name)


def _seconds(text: str, option: str) -> float:
    units = {"ms": 1e-3, "s": 1.0, "m": 60.0}
    t = text.strip().lower()
    for unit in ("ms", "s", "m"):
        if t.endswith(unit):
            t, scale = t[: -len(unit)], units[unit]
            break
    else:
        scale = 1.0
    try:
        value = float(t) * scale
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise UsageError(f"{option} {text!r}: not a duration between 0 and 1 hour", hint=f"e.g. {option} 20s")
    return value


def _rates(rate: Optional[list[str]]) -> tuple[float, ...]:
    if not rate:
        return ()
    try:
        rates = o.split_values(rate, "--rate", float)
    except UsageError:
        rates = []
    if not rates or min(rates) <= 0:
        raise UsageError(f"--rate {','.join(rate)!r}: not a list of positive rates", hint="e.g. --rate 100,200")
    return tuple(rates)


def _delays(max_queue_delay_ms: list[str]) -> tuple[float, ...]:
    try:
        delays = o.split_values(max_queue_delay_ms, "--max-queue-delay-ms", float)
    except UsageError:
        raise UsageError(f"--max-queue-delay-ms {','.join(max_queue_delay_ms)!r}: not a list of numbers",
                         hint="e.g. --max-queue-delay-ms 1,4") from None
    if not delays or min(delays) < 0:
        raise UsageError("--max-queue-delay-ms: delays must be 0 or more", hint="e.g. --max-queue-delay-ms 1,4")
    return tuple(delays)


def _policies(batch_policy: list[str]) -> tuple[BatchPolicy, ...]:
    named = o.split_values(batch_policy, "--batch-policy")
    policies = tuple(p for p in named if is_policy(p))
    if not policies or len(policies) < len(named):
        raise UsageError(f"--batch-policy {','.join(batch_policy)!r}: policies are adaptive and delay",
                         hint="e.g. --batch-policy adaptive,delay")
    return policies


def loadtest(
    target: Annotated[str, typer.Argument(help="http://127.0.0.1:PORT of a running server, or an ARTIFACT: then loadtest serves it itself under each --max-batch x --max-queue-delay-ms setting and finds the best.")],
    concurrency: Annotated[list[str], typer.Option("--concurrency", metavar="N", help="Closed loop: numbers of clients (repeat or separate with commas), each sending its next request when the last is answered.")] = ["1", "2", "4", "8", "16"],
    rate: Annotated[Optional[list[str]], typer.Option("--rate", metavar="R", help="Open loop instead: request rates per second (repeat or separate with commas; Poisson arrivals).")] = None,
    duration: Annotated[str, typer.Option("--duration", help="Measured time per point, e.g. 20s (after --warmup).")] = "20s",
    warmup: Annotated[str, typer.Option("--warmup", help="Load before each measured window, not counted.")] = "1s",
    slo_p99_ms: Annotated[Optional[float], typer.Option("--slo-p99-ms", min=0.001, help="p99 latency target: the best setting is the highest throughput within it; none within it exits 3.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name on the server (default: the one an optkit server serves).")] = None,
    eval_data: o.EvalData = None,
    rows: Annotated[int, typer.Option("--rows", min=1, max=4096, help="Rows (batch) per request.")] = 1,
    max_batch: Annotated[list[str], typer.Option("--max-batch", metavar="N", help="ARTIFACT: --max-batch settings to sweep (repeat or separate with commas).")] = ["1", "4", "8", "16"],
    max_queue_delay_ms: Annotated[list[str], typer.Option("--max-queue-delay-ms", metavar="MS", help="ARTIFACT: queue delays (ms) to sweep (repeat or separate with commas).")] = ["1", "4"],
    batch_policy: Annotated[list[str], typer.Option("--batch-policy", metavar="POLICY", help="ARTIFACT: batching policies to sweep: adaptive, delay (repeat or separate with commas).")] = ["adaptive"],
    threads: o.Threads = 1,
    instances: Annotated[int, typer.Option("--instances", min=1, max=64, help="ARTIFACT: model copies in each server.")] = 1,
    record: Annotated[bool, typer.Option("--record/--no-record", help="ARTIFACT: write the best setting into the artifact's sidecar, where 'optkit report' shows it (default on).")] = True,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Folder for loadtest.json, loadtest.md and serve.yaml (the best setting as a recipe's serve: section).")] = None,
    json_out: o.Json = False,
) -> None:
    """Throughput and p50/p90/p99 under concurrent load; with an ARTIFACT, the best batching setting under a p99 SLO."""
    from optkit.serve.loadtest import Load
    from optkit.serve.loadtest_run import LoadtestRun, run_loadtest
    from optkit.serve.sweep import SweepPlan

    load = Load(concurrencies=_sizes(concurrency, "--concurrency"), rates=_rates(rate),
                duration_s=_seconds(duration, "--duration"),
                warmup_s=0.0 if warmup.strip() in ("0", "0s") else _seconds(warmup, "--warmup"), rows=rows)
    plan = SweepPlan(max_batches=_sizes(max_batch, "--max-batch"), delays_ms=_delays(max_queue_delay_ms),
                     policies=_policies(batch_policy), threads=threads, instances=instances)
    run = LoadtestRun(target, load=load, sweep=plan, slo_p99_ms=slo_p99_ms, model=model, eval_data=eval_data,
                      record=record, output=output, json_out=json_out)
    raise typer.Exit(run_loadtest(run))
