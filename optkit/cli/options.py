"""Options shared by several commands, defined once.

Every list option takes its values repeated, comma-separated or both (``--batch-sizes 1 --batch-sizes 8`` is
``--batch-sizes 1,8``): ``split_values`` reads them, for these options and the generated ones alike.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer

EvalData = Annotated[Optional[Path], typer.Option("--eval-data", help=".npz with arrays named after the model inputs (+ labels). Default: the model's own.")]
Weights = Annotated[Optional[Path], typer.Option("--weights", help="state_dict for a factory MODEL (loaded with weights_only=True).")]
InputShape = Annotated[Optional[list[str]], typer.Option("--input-shape", metavar="NAME:DIMS", help="An input's shape, batch first, dimensions separated by 'x' (e.g. x:1x3x224x224); repeat or separate with commas for several inputs. Default: from the evaluation data or the model's spec.")]
BatchSizes = Annotated[list[str], typer.Option("--batch-sizes", metavar="N", help="Batch sizes to time (repeat or separate with commas: 1,8); the first is the ledger's.")]
Threads = Annotated[int, typer.Option("--threads", min=0, help="Intra-op threads for every backend (0: the runtime's default).")]
Budget = Annotated[float, typer.Option("--budget-s", min=0.01, help="Seconds of timing per artifact and batch size (20% warm-up).")]
Measure = Annotated[bool, typer.Option("--measure/--no-measure", help="Measure the output (accuracy, latency, size) and print the ledger.")]
Executor = Annotated[str, typer.Option("--executor", help="Where builds and timing run: local (this process, one after another) or ray (builds as parallel Ray tasks, timing alone on a measurement node; pip install 'optkit[ray]').")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="An existing Ray cluster's address (ray start --head prints it); default with --executor ray: a local cluster in this process.")]
Json = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout (nothing else goes there).")]
Markdown = Annotated[bool, typer.Option("--markdown", help="Print the ledger as a Markdown table.")]
Output = Annotated[str, typer.Option("-o", "--output", help="Output file.")]
Metric = Annotated[Optional[str], typer.Option("--metric", help="Task metric every figure and accuracy budget is judged on: top1 | cosine | max_abs | ctc_string_match[:BLANK] | mask_iou[:THRESHOLD] | FILE.py:FUNCTION (fn(outputs, batch) -> {name: value}). Default: top1 with labels, else cosine judges.")]
Task = Annotated[Optional[str], typer.Option("--task", help="Hugging Face models: feature-extraction | sentence-embedding | text-classification | token-classification | image-classification | text-generation (default: detected from the folder).")]
TextData = Annotated[Optional[Path], typer.Option("--text-data", help="Hugging Face text models: .txt (a text per line), .jsonl or .csv (text, label) tokenized with the model's tokenizer; the first half evaluates, the second calibrates.")]
ImageData = Annotated[Optional[Path], typer.Option("--image-data", help="Hugging Face image classifiers: a folder of images, or of class sub-folders (their names are the labels), preprocessed with the model's image processor; the first half evaluates, the second calibrates.")]
MaxLength = Annotated[int, typer.Option("--max-length", min=1, max=65536, help="--text-data: tokens per text at most (longer ones are truncated).")]
SeqLen = Annotated[Optional[int], typer.Option("--seq-len", min=1, max=65536, help="--text-data: pad every text to exactly this many tokens (one length, for comparisons); default: each batch at its longest text.")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help="Run a Hugging Face model's own code (auto_map in config.json); refused otherwise.")]


def split_values(values: Sequence[Any] | str | None, flag: str, kind: type = str) -> list[Any]:
    """A list option's values, repeated or comma-separated or both, each converted to ``kind``."""
    from optkit.types.errors import UsageError

    given = [values] if isinstance(values, str) else list(values or [])
    items = [item.strip() for value in given for item in str(value).split(",") if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise UsageError(f"{flag} {','.join(map(str, given))!r}: not a list of {'numbers' if kind in (int, float) else 'values'}",
                         hint=f"Repeat {flag} or separate the values with commas, e.g. {flag} 1,8") from None


def hf_keys(task: str | None, text_data: Path | None, image_data: Path | None, max_length: int,
            seq_len: int | None, trust_remote_code: bool) -> dict:
    """The recipe keys the Hugging Face options stand for (only those set)."""
    keys = {"task": task, "text_data": str(text_data) if text_data else None, "seq_len": seq_len,
            "image_data": str(image_data) if image_data else None,
            "max_length": max_length if max_length != 128 else None, "trust_remote_code": trust_remote_code or None}
    return {k: v for k, v in keys.items() if v is not None}
