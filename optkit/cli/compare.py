"""optkit compare A B C ...: one table, latency measured interleaved in one run."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optkit.cli import options as o


def compare(
    artifacts: Annotated[list[str], typer.Argument(help="Artifacts to compare (the first is the baseline).")],
    batch_sizes: o.BatchSizes = ["1"],
    threads: o.Threads = 1,
    budget_s: o.Budget = 2.0,
    eval_data: o.EvalData = None,
    metric: o.Metric = None,
    json_out: o.Json = False,
    markdown: o.Markdown = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 2) instead of warning when an artifact's sha256 is not the one its sidecar (or an ancestor's record) holds.")] = False,
) -> None:
    """Accuracy, p50/p90, throughput and size of several artifacts, timed round-robin so noise hits all alike."""
    from optkit.cli.common import measure_block, print_json
    from optkit.engine.compare import compare_artifacts
    from optkit.report.compare import compare_markdown, render_compare
    from optkit.types.ui import UI

    measure = measure_block(batch_sizes, threads, budget_s)
    ui = UI()
    compared = compare_artifacts(artifacts, measure["batch_sizes"], threads, budget_s,
                                 Path(eval_data) if eval_data else None, ui, metric=metric, strict=strict)
    if json_out:
        print_json({"artifacts": [r.to_json() for r in compared]})
    elif markdown:
        print(compare_markdown(compared), end="")
    else:
        render_compare(ui.out, compared)
