"""optkit simplify | fuse | quantize | compile IN -o OUT: the ONNX -> ONNX steps, each a one-step recipe.

Their step options are generated from each step's Config (see ``from_config``).
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options

InputModel = Annotated[str, typer.Argument(help="An ONNX model (with or without an optkit sidecar).")]


@config_options("simplify")
def simplify(
    model: InputModel, output: o.Output,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Constant folding, shape inference and dead-node removal; fails if outputs change beyond tolerance."""
    from optkit.cli.common import run_command

    run_command("simplify", model, output, config_extra or {}, eval_data=eval_data, metric=metric, measure=measure,
                batch_sizes=batch_sizes, threads=threads, budget_s=budget_s, json_out=json_out, markdown=markdown)


@config_options("fuse")
def fuse(
    model: InputModel, output: o.Output,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Operator fusion (Conv+BN, transformer Attention/LayerNorm/GELU, ORT graph optimizations), counted."""
    from optkit.cli.common import run_command

    run_command("fuse", model, output, config_extra or {}, eval_data=eval_data, metric=metric, measure=measure,
                batch_sizes=batch_sizes, threads=threads, budget_s=budget_s, json_out=json_out, markdown=markdown)


@config_options("quantize")
def quantize(
    model: InputModel, output: o.Output,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """int8 (static QDQ / dynamic) or fp16 quantization with ONNX Runtime, judged on accuracy."""
    from optkit.cli.common import run_command

    run_command("quantize", model, output, config_extra or {}, eval_data=eval_data, metric=metric, measure=measure,
                batch_sizes=batch_sizes, threads=threads, budget_s=budget_s, json_out=json_out, markdown=markdown)


@config_options("compile")
def compile_cmd(
    model: InputModel, output: o.Output,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Build the artifact a runtime deploys: ONNX Runtime (tuned session), OpenVINO IR, TensorRT engine."""
    from optkit.cli.common import run_command

    run_command("compile", model, output, config_extra or {}, eval_data=eval_data, metric=metric, measure=measure,
                batch_sizes=batch_sizes, threads=threads, budget_s=budget_s, json_out=json_out, markdown=markdown)
