"""What the commands share: turn options into a one-step recipe, run it, print the results."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from optkit.types.errors import UsageError

if TYPE_CHECKING:  # the commands' start-up imports no pydantic model
    from optkit.types.ledger import LedgerRow
    from optkit.types.records import Latency


def parse_batch_sizes(values: Sequence[str] | str) -> list[int]:
    """``--batch-sizes``, repeated or comma-separated."""
    from optkit.cli.options import split_values
    from optkit.engine.recipe import MAX_BATCH

    text = ",".join([values] if isinstance(values, str) else map(str, values))
    try:
        sizes = split_values(values, "--batch-sizes", int)
        if not sizes or any(s <= 0 or s > MAX_BATCH for s in sizes):
            raise ValueError
    except (UsageError, ValueError):
        raise UsageError(f"bad --batch-sizes '{text}'",
                         hint=f"Give integers from 1 to {MAX_BATCH}, repeated or separated by commas, e.g. 1,8") from None
    return sizes


def parse_shapes(items: list[str] | None) -> dict[str, list[int]] | None:
    """``--input-shape NAME:DIMS``, repeated or comma-separated."""
    from optkit.cli.options import split_values

    if not items:
        return None
    from optkit.types.artifact import parse_input_shape

    return {name: list(shape) for name, shape in map(parse_input_shape, split_values(items, "--input-shape"))}


def measure_block(batch_sizes: Sequence[str] | str, threads: int, budget_s: float, enabled: bool = True) -> dict[str, Any]:
    """The shared measurement options, validated by the recipe's own ``measure:`` model (one set of bounds)."""
    from pydantic import ValidationError

    from optkit.engine.recipe import MeasureConfig

    block = {"enabled": enabled, "batch_sizes": parse_batch_sizes(batch_sizes), "threads": threads, "budget_s": budget_s}
    try:
        MeasureConfig.model_validate(block)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}", hint="See the command's --help") from None
    return block


def run_one_step(*, model: str, step: str, options: dict[str, Any], measure: dict[str, Any],
                 output: str | Path | None = None, weights: Path | None = None, eval_data: Path | None = None,
                 input_shapes: dict[str, list[int]] | None = None, quiet: bool = False, metric: str | None = None,
                 hf: dict[str, Any] | None = None):
    """Build the one-step recipe a command stands for and run it through the engine."""
    from pydantic import ValidationError

    from optkit.engine.run import run_recipe
    from optkit.engine.recipe import Recipe, validation_message
    from optkit.types.ui import UI

    if output is not None and str(output).strip() == "":
        raise UsageError("-o/--output is empty", hint="Give an output path, e.g. -o model.onnx")
    raw = {
        "model": model, "weights": str(weights) if weights else None, "input_shapes": input_shapes,
        "eval_data": str(eval_data) if eval_data else None, "measure": measure, "metric": metric,
        "steps": [{"name": step, "options": options, "output": str(output) if output else None}], **(hf or {}),
    }
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        raise validation_message(exc, f"optkit {step}") from exc
    from optkit.cli.from_config import flag_name
    from optkit.steps.base import step_class

    try:  # name the command-line option, not the recipe key, when an option value is bad
        step_class(step).Config.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else None
        flag = flag_name(step, field) if field else f"optkit {step}"
        message = err["msg"].removeprefix("Value error, ")
        raise UsageError(f"{flag}: {message}", hint=f"See 'optkit {step} --help'") from exc
    ui = UI(quiet=quiet)
    return run_recipe(recipe, Path.cwd(), ui), ui


def run_command(step: str, model: str, output: str, config: dict[str, Any], *, eval_data: Path | None,
                metric: str | None, measure: bool, batch_sizes: Sequence[str], threads: int, budget_s: float, json_out: bool,
                markdown: bool, weights: Path | None = None, input_shape: list[str] | None = None,
                hf: dict[str, Any] | None = None) -> None:
    """What a step command does: run its one-step recipe, then print the ledger unless told not to."""
    result, ui = run_one_step(model=model, step=step, options=config, output=output, weights=weights,
                              eval_data=eval_data, input_shapes=parse_shapes(input_shape), metric=metric,
                              measure=measure_block(batch_sizes, threads, budget_s, measure), hf=hf)
    if measure or json_out or markdown:
        emit_ledger(ui, result.final, as_json=json_out, markdown=markdown, latency=result.ledger_latency)


def print_json(obj: Any) -> None:
    import sys

    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def emit_ledger(ui, artifact, *, as_json: bool, markdown: bool, latency: list[list[Latency] | None] | None = None
                ) -> None:
    """The ledger; ``latency``: the run's interleaved timing of every row (else step-time figures)."""
    from optkit.types.ledger import ledger_rows

    rows = ledger_rows(artifact.chain(), latency)
    warn_slower(ui, rows)
    if as_json:
        print_json({"steps": [r.to_json() for r in rows]})
    else:
        render_rows(ui, rows, artifact, markdown=markdown)


def render_rows(ui, rows: list[LedgerRow], artifact, *, markdown: bool) -> None:
    from optkit.report.ledger import ledger_markdown, render_ledger

    if markdown:
        print(ledger_markdown(rows), end="")
    else:
        render_ledger(ui.out, rows, title=f"optkit ledger: {artifact.path.name}")


def warn_slower(ui, rows: list[LedgerRow]) -> None:
    for row in rows:
        if row.slower and row.latency:
            ui.warn(f"{row.step} ({Path(row.artifact).name}) is SLOWER than its input: "
                    f"{row.speedup_vs_parent:.2f}x its speed at batch {row.latency.batch_size}")
