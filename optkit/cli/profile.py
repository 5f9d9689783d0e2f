"""optkit profile ARTIFACT"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options


@config_options("profile")  # its one field, batch_sizes, is the shared --batch-sizes (the run's sizes)
def profile(
    artifact: Annotated[str, typer.Argument(help="A torch model (as for export) or an .onnx file.")],
    batch_sizes: o.BatchSizes = ["1", "8"],
    threads: o.Threads = 1,
    budget_s: o.Budget = 1.0,
    eval_data: o.EvalData = None,
    metric: o.Metric = None,
    weights: o.Weights = None,
    input_shape: o.InputShape = None,
    task: o.Task = None, text_data: o.TextData = None, image_data: o.ImageData = None,
    max_length: o.MaxLength = 128, seq_len: o.SeqLen = None,
    trust_remote_code: o.TrustRemoteCode = False,
    json_out: o.Json = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Measure latency (p50/p90/p99, throughput) per batch size, accuracy, size and peak memory."""
    from optkit.cli.common import measure_block, parse_shapes, print_json, run_one_step
    from optkit.report.ledger import render_profile

    result, ui = run_one_step(model=artifact, step="profile", options=config_extra or {}, weights=weights, eval_data=eval_data,
                              input_shapes=parse_shapes(input_shape), metric=metric, measure=measure_block(batch_sizes, threads, budget_s),
                              hf=o.hf_keys(task, text_data, image_data, max_length, seq_len, trust_remote_code))
    prof = result.profiles[0]
    if json_out:
        print_json(prof.to_json())
    else:
        render_profile(ui.out, prof)
