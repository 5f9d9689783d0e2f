"""Options shared by several commands, defined once."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

EvalData = Annotated[Optional[Path], typer.Option("--eval-data", help=".npz with arrays named after the model inputs (+ labels). Default: the model's own.")]
Weights = Annotated[Optional[Path], typer.Option("--weights", help="state_dict for a factory MODEL (loaded with weights_only=True).")]
InputShape = Annotated[Optional[list[str]], typer.Option("--input-shape", help="NAME:DIMS, e.g. input:1x1x32x32 (repeat per input). Default: from the evaluation data.")]
BatchSizes = Annotated[str, typer.Option("--batch-sizes", help="Comma-separated batch sizes to time; the first is the ledger's.")]
Threads = Annotated[int, typer.Option("--threads", min=0, help="Intra-op threads for every backend (0: the runtime's default).")]
Budget = Annotated[float, typer.Option("--budget-s", min=0.01, help="Seconds of timing per artifact and batch size (20% warm-up).")]
Measure = Annotated[bool, typer.Option("--measure/--no-measure", help="Measure the output (accuracy, latency, size) and print the ledger.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (nothing else goes there).")]
Markdown = Annotated[bool, typer.Option("--markdown", help="Print the ledger as a Markdown table.")]
Output = Annotated[str, typer.Option("-o", "--output", help="Output file.")]
Metric = Annotated[Optional[str], typer.Option("--metric", help="Task metric every figure and accuracy budget is judged on: top1 | cosine | max_abs | ctc_string_match[:BLANK] | mask_iou[:THRESHOLD] | FILE.py:FUNCTION (fn(outputs, batch) -> {name: value}). Default: top1 with labels, else cosine judges.")]
