"""optkit prune MODEL -o OUT | optkit distill --teacher MODEL -o OUT: the PyTorch -> PyTorch steps.

Both write a model folder (factory + weights + pruned shapes) that ``export`` and every other
command accept, and print the ledger: parameters, MACs, accuracy and latency before and after.
Their step options, training ones included, are generated from each step's Config (see ``from_config``).
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options

TorchModel = Annotated[str, typer.Argument(help="PyTorch model: sample-model folder (or a pruned one), or factory 'file.py:build'.")]
OutFolder = Annotated[str, typer.Option("-o", "--output", help="Output model folder.")]


@config_options("prune")
def prune(
    model: TorchModel, output: OutFolder, weights: o.Weights = None,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Remove channels (torch-pruning dependency graph) or zero weights, then optionally fine-tune to recover."""
    from optkit.cli.common import run_command

    run_command("prune", model, output, config_extra or {}, weights=weights, eval_data=eval_data, metric=metric,
                measure=measure, batch_sizes=batch_sizes, threads=threads, budget_s=budget_s, json_out=json_out,
                markdown=markdown)


@config_options("distill")
def distill(
    output: OutFolder,
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher: PyTorch folder or factory (its data splits are used by default).")],
    weights: o.Weights = None,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Knowledge distillation: train a smaller student on the teacher's soft targets (and labels)."""
    from optkit.cli.common import run_command

    config = config_extra or {}
    if not {"student", "student_width", "student_macs"} & config.keys():
        from optkit.types.errors import UsageError

        raise UsageError("distill needs a student", hint="Pass --student MODEL, --student-width 0.5 or --student-macs 0.25")
    run_command("distill", teacher, output, config, weights=weights, eval_data=eval_data, metric=metric,
                measure=measure, batch_sizes=batch_sizes, threads=threads, budget_s=budget_s, json_out=json_out,
                markdown=markdown)
