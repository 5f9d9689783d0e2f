"""optkit serve ARTIFACT  and  optkit loadtest URL|ARTIFACT"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Sequence

import typer

from optkit.cli import options as o
from optkit.types.errors import UsageError


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


def _serve_section(path: Path):
    """The ``serve:`` section of a YAML file, validated (unknown keys and bad values named)."""
    import yaml
    from pydantic import ValidationError

    from optkit.engine.recipe import ServeSection
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
        return ServeSection(**section)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--config {path}: serve.{'.'.join(map(str, err['loc']))}: {err['msg']}",
                         hint=f"serve: takes {', '.join(ServeSection.model_fields)}") from None


def serve(
    artifact: Annotated[str, typer.Argument(help="An artifact optkit wrote (.onnx, OpenVINO .xml, torch model).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: a free one, printed on start).")] = 8000,
    config: Annotated[Optional[Path], typer.Option("--config", help="A YAML with a serve: section (a recipe, or the serve.yaml optkit loadtest writes); the options below override it.")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, max=4096, help="Rows merged into one run at most (1: no batching). Default 16.")] = None,
    max_queue_delay_ms: Annotated[Optional[float], typer.Option("--max-queue-delay-ms", min=0, max=10000, help="How long the oldest queued request may wait for others to join its batch. Default 2.")] = None,
    batch_policy: Annotated[Optional[str], typer.Option("--batch-policy", help="adaptive: a batch below --max-batch waits only while requests are on their way in (--max-queue-delay-ms its bound); delay: always waits up to --max-queue-delay-ms, as Triton. Default adaptive.")] = None,
    preferred_batch: Annotated[Optional[list[str]], typer.Option("--preferred-batch", metavar="N", help="Batch sizes the batcher sends as soon as it has them (repeat or separate with commas: 4,8).")] = None,
    instances: Annotated[Optional[int], typer.Option("--instances", min=1, max=64, help="Model copies, each running batches in its own thread. Default 1.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=0, help="Intra-op threads per instance (0: the runtime's default). Default 1.")] = None,
    cache_size: Annotated[Optional[int], typer.Option("--cache-size", min=0, help="Responses kept for identical requests (0: no cache). Default 0.")] = None,
    max_queue: Annotated[Optional[int], typer.Option("--max-queue", min=1, help="Requests waiting at most; beyond it the server answers 503. Default 1024.")] = None,
    pad_sequences: Annotated[Optional[bool], typer.Option("--pad-sequences/--no-pad-sequences", help="Token models (an attention_mask input): requests of different lengths share a batch, right-padded with zeros (default on).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name in the URL (default: the file's stem).")] = None,
) -> None:
    """Serve an artifact over KServe's Open Inference Protocol v2 (REST), with a dynamic batcher and /metrics."""
    from optkit.engine.recipe import ServeSection
    from optkit.serve.app import ServeSettings
    from optkit.serve.server import serve as run_server

    if not Path(artifact).exists() and ":" not in artifact:
        raise UsageError(f"{artifact}: no such file", hint="Give an artifact optkit wrote, e.g. optkit-out/.../03_quantize.onnx")
    base = _serve_section(config) if config else ServeSection()
    from optkit.serve.batcher import POLICIES

    if batch_policy is not None and batch_policy not in POLICIES:
        raise UsageError(f"--batch-policy {batch_policy!r}: not a policy", hint="--batch-policy adaptive or --batch-policy delay")
    given = {"max_batch": max_batch, "max_queue_delay_ms": max_queue_delay_ms, "batch_policy": batch_policy,
             "instances": instances,
             "threads": threads, "cache_size": cache_size, "max_queue": max_queue, "pad_sequences": pad_sequences,
             "preferred_batch": list(_sizes(preferred_batch, "--preferred-batch")) if preferred_batch else None}
    section = base.model_copy(update={k: v for k, v in given.items() if v is not None})
    settings = ServeSettings(**{**section.model_dump(), "preferred_batch": tuple(section.preferred_batch)})
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


def loadtest(
    target: Annotated[str, typer.Argument(help="http://127.0.0.1:PORT of a running server, or an ARTIFACT: then loadtest serves it itself under each --max-batch x --max-queue-delay-ms setting and finds the best.")],
    concurrency: Annotated[list[str], typer.Option("--concurrency", metavar="N", help="Closed loop: numbers of clients (repeat or separate with commas), each sending its next request when the last is answered.")] = ("1", "2", "4", "8", "16"),
    rate: Annotated[Optional[list[str]], typer.Option("--rate", metavar="R", help="Open loop instead: request rates per second (repeat or separate with commas; Poisson arrivals).")] = None,
    duration: Annotated[str, typer.Option("--duration", help="Measured time per point, e.g. 20s (after --warmup).")] = "20s",
    warmup: Annotated[str, typer.Option("--warmup", help="Load before each measured window, not counted.")] = "1s",
    slo_p99_ms: Annotated[Optional[float], typer.Option("--slo-p99-ms", min=0.001, help="p99 latency target: the best setting is the highest throughput within it; none within it exits 3.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name on the server (default: the one an optkit server serves).")] = None,
    eval_data: o.EvalData = None,
    rows: Annotated[int, typer.Option("--rows", min=1, max=4096, help="Rows (batch) per request.")] = 1,
    max_batch: Annotated[list[str], typer.Option("--max-batch", metavar="N", help="ARTIFACT: --max-batch settings to sweep (repeat or separate with commas).")] = ("1", "4", "8", "16"),
    max_queue_delay_ms: Annotated[list[str], typer.Option("--max-queue-delay-ms", metavar="MS", help="ARTIFACT: queue delays (ms) to sweep (repeat or separate with commas).")] = ("1", "4"),
    batch_policy: Annotated[list[str], typer.Option("--batch-policy", metavar="POLICY", help="ARTIFACT: batching policies to sweep: adaptive, delay (repeat or separate with commas).")] = ("adaptive",),
    threads: o.Threads = 1,
    instances: Annotated[int, typer.Option("--instances", min=1, max=64, help="ARTIFACT: model copies in each server.")] = 1,
    record: Annotated[bool, typer.Option("--record/--no-record", help="ARTIFACT: write the best setting into the artifact's sidecar, where 'optkit report' shows it (default on).")] = True,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Folder for loadtest.json, loadtest.md and serve.yaml (the best setting as a recipe's serve: section).")] = None,
    json_out: o.Json = False,
) -> None:
    """Throughput and p50/p90/p99 under concurrent load; with an ARTIFACT, the best batching setting under a p99 SLO."""
    from optkit.serve.report import run_loadtest

    conc = _sizes(concurrency, "--concurrency")
    rates = None
    if rate:
        try:
            rates = o.split_values(rate, "--rate", float)
        except UsageError:
            rates = []
        if not rates or min(rates) <= 0:
            raise UsageError(f"--rate {','.join(rate)!r}: not a list of positive rates", hint="e.g. --rate 100,200")
    try:
        delays = o.split_values(max_queue_delay_ms, "--max-queue-delay-ms", float)
    except UsageError:
        raise UsageError(f"--max-queue-delay-ms {','.join(max_queue_delay_ms)!r}: not a list of numbers",
                         hint="e.g. --max-queue-delay-ms 1,4") from None
    if not delays or min(delays) < 0:
        raise UsageError("--max-queue-delay-ms: delays must be 0 or more", hint="e.g. --max-queue-delay-ms 1,4")
    policies = o.split_values(batch_policy, "--batch-policy")
    from optkit.serve.batcher import POLICIES

    if not policies or any(p not in POLICIES for p in policies):
        raise UsageError(f"--batch-policy {','.join(batch_policy)!r}: policies are adaptive and delay",
                         hint="e.g. --batch-policy adaptive,delay")
    code = run_loadtest(target, policies=policies, record=record, concurrencies=list(conc), rates=rates, duration_s=_seconds(duration, "--duration"),
                        warmup_s=0.0 if warmup.strip() in ("0", "0s") else _seconds(warmup, "--warmup"),
                        slo_p99_ms=slo_p99_ms, model=model, eval_data=eval_data, rows=rows,
                        max_batches=list(_sizes(max_batch, "--max-batch")), delays_ms=delays, threads=threads,
                        instances=instances, output=output, json_out=json_out)
    raise typer.Exit(code)
