"""optkit export MODEL -o OUT.onnx; its step options are generated from the export step's Config."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options


@config_options("export")
def export(
    model: Annotated[str, typer.Argument(help="Sample-model folder, Hugging Face folder or hf:ORG/NAME, factory 'file.py:build' or 'pkg.mod:build', TorchScript file or torch.export .pt2.")],
    output: o.Output, weights: o.Weights = None, input_shape: o.InputShape = None,
    task: o.Task = None, text_data: o.TextData = None, image_data: o.ImageData = None,
    max_length: o.MaxLength = 128, seq_len: o.SeqLen = None,
    trust_remote_code: o.TrustRemoteCode = False,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Export a PyTorch model to one self-contained ONNX file, verified in ONNX Runtime, and measure it."""
    from optkit.cli.common import run_command

    run_command("export", model, output, config_extra or {}, weights=weights, input_shape=input_shape,
                eval_data=eval_data, metric=metric, measure=measure, batch_sizes=batch_sizes, threads=threads,
                budget_s=budget_s, json_out=json_out, markdown=markdown,
                hf=o.hf_keys(task, text_data, image_data, max_length, seq_len, trust_remote_code))
