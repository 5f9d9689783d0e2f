"""optkit export MODEL -o OUT.onnx"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options


@config_options("export")
def export(
    model: Annotated[str, typer.Argument(help="Sample-model folder, factory 'file.py:build' or 'pkg.mod:build', TorchScript file or torch.export .pt2.")],
    output: o.Output,
    weights: o.Weights = None,
    input_shape: o.InputShape = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch/--static-batch", help="Dynamic batch dimension (default) or fixed.")] = True,
    dynamic_axis: Annotated[Optional[list[str]], typer.Option("--dynamic-axis", help="Another dynamic dimension: NAME:DIM[:LABEL], e.g. input_ids:1:sequence (repeat; inputs sharing a LABEL share the size). Default: dim 1 of integer token inputs. 'none' for only the batch.")] = None,
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default 18 for dynamo, 17 for torchscript).")] = None,
    exporter: Annotated[str, typer.Option("--exporter", help="auto | dynamo | torchscript")] = "auto",
    eval_data: o.EvalData = None,
    metric: o.Metric = None,
    atol: o.Atol = 1e-4,
    rtol: o.Rtol = 1e-3,
    measure: o.Measure = True,
    batch_sizes: o.BatchSizes = "1",
    threads: o.Threads = 1,
    budget_s: o.Budget = 1.0,
    json_out: o.Json = False,
    markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Export a PyTorch model to one self-contained ONNX file, verified in ONNX Runtime, and measure it."""
    from optkit.cli.common import emit_ledger, measure_block, parse_shapes, run_one_step

    options = {**(config_extra or {}), "dynamic_batch": dynamic_batch, "exporter": exporter, "atol": atol, "rtol": rtol}
    if dynamic_axis:
        options["dynamic_axes"] = [] if [a.lower() for a in dynamic_axis] == ["none"] else dynamic_axis
    if opset is not None:
        options["opset"] = opset
    result, ui = run_one_step(
        model=model, step="export", options=options, output=output, weights=weights, eval_data=eval_data,
        input_shapes=parse_shapes(input_shape), metric=metric, measure=measure_block(batch_sizes, threads, budget_s, measure))
    if measure or json_out or markdown:
        emit_ledger(ui, result.final, as_json=json_out, markdown=markdown, latency=result.ledger_latency)
