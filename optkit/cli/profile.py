"""optkit profile ARTIFACT"""
from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def profile(
    artifact: Annotated[str, typer.Argument(help="A torch model (as for export) or an .onnx file.")],
    batch_sizes: o.BatchSizes = "1,8",
    threads: o.Threads = 1,
    budget_s: o.Budget = 1.0,
    eval_data: o.EvalData = None,
    metric: o.Metric = None,
    weights: o.Weights = None,
    input_shape: o.InputShape = None,
    json_out: o.Json = False,
) -> None:
    """Measure latency (p50/p90/p99, throughput) per batch size, accuracy, size and peak memory."""
    from optkit.cli.common import measure_block, parse_shapes, print_json, run_one_step
    from optkit.report.ledger import render_profile

    result, ui = run_one_step(model=artifact, step="profile", options={}, weights=weights, eval_data=eval_data,
                              input_shapes=parse_shapes(input_shape), metric=metric, measure=measure_block(batch_sizes, threads, budget_s))
    prof = result.profiles[0]
    if json_out:
        print_json(prof)
    else:
        render_profile(ui.out, prof)
