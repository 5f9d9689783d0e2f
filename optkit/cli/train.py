"""optkit prune MODEL -o OUT | optkit distill --teacher MODEL -o OUT: the PyTorch -> PyTorch steps.

Both write a model folder (factory + weights + pruned shapes) that ``export`` and every other
command accept, and print the ledger: parameters, MACs, accuracy and latency before and after.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options

TorchModel = Annotated[str, typer.Argument(help="PyTorch model: sample-model folder (or a pruned one), or factory 'file.py:build'.")]
OutFolder = Annotated[str, typer.Option("-o", "--output", help="Output model folder.")]
TrainData = Annotated[Optional[Path], typer.Option("--train-data", help=".npz with arrays named after the inputs (+ labels). Default: the model's train split.")]
ValData = Annotated[Optional[Path], typer.Option("--val-data", help=".npz that picks the best epoch. Default: the calibration split (never the eval split).")]
Lr = Annotated[float, typer.Option("--lr", help="AdamW learning rate (cosine-decayed).")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Training batch size.")]
WeightDecay = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")]
Augment = Annotated[bool, typer.Option("--augment/--no-augment", help="Image inputs: random shifts of up to 2 pixels.")]
Patience = Annotated[int, typer.Option("--patience", help="Stop after this many epochs without a better validation accuracy (0: never).")]
Seed = Annotated[int, typer.Option("--seed", help="Seeds initialisation, shuffling and augmentation (runs are deterministic).")]
TrainThreads = Annotated[int, typer.Option("--train-threads", help="torch threads while training (0: all cores).")]


def _train_options(train_data, val_data, lr, batch_size, weight_decay, augment, patience, seed, train_threads) -> dict[str, Any]:
    return {"train_data": str(train_data) if train_data else None, "val_data": str(val_data) if val_data else None,
            "lr": lr, "batch_size": batch_size, "weight_decay": weight_decay, "augment": augment,
            "patience": patience, "seed": seed, "train_threads": train_threads}


def _run(step: str, model: str, output: Path, options: dict[str, Any], weights, eval_data, measure, batch_sizes,
         threads, budget_s, json_out, markdown, metric: str | None = None, extra: dict | None = None) -> None:
    from optkit.cli.common import emit_ledger, measure_block, run_one_step

    options = {**(extra or {}), **options}  # generated options (from the step's Config) and declared ones
    result, ui = run_one_step(model=model, step=step, options={k: v for k, v in options.items() if v is not None},
                              output=output, weights=weights, eval_data=eval_data, metric=metric,
                              measure=measure_block(batch_sizes, threads, budget_s, measure))
    if measure or json_out or markdown:
        emit_ledger(ui, result.final, as_json=json_out, markdown=markdown, latency=result.ledger_latency)


@config_options("prune")
def prune(
    model: TorchModel, output: OutFolder,
    ratio: Annotated[Optional[float], typer.Option("--ratio", help="Structured: fraction of channels removed per group, in (0, 1).")] = None,
    target_macs: Annotated[Optional[float], typer.Option("--target-macs", help="Structured: keep at most this fraction of the MACs, in (0, 1).")] = None,
    importance: Annotated[str, typer.Option("--importance", help="l1 | l2 | taylor (needs labelled training data)")] = "l2",
    global_pruning: Annotated[bool, typer.Option("--global/--uniform", help="Rank channels across layers, or the same ratio everywhere (default).")] = False,
    ignore: Annotated[Optional[list[str]], typer.Option("--ignore", help="Module name (glob) never pruned (repeat). Output layers always are.")] = None,
    round_to: Annotated[int, typer.Option("--round-to", help="Keep channel counts multiples of this.")] = 8,
    prune_attention: Annotated[bool, typer.Option("--prune-attention", help="Also prune attention projections.")] = False,
    unstructured: Annotated[bool, typer.Option("--unstructured", help="Unstructured global magnitude pruning (no speedup on dense runtimes).")] = False,
    sparsity: Annotated[Optional[float], typer.Option("--sparsity", help="Unstructured: fraction of Conv/Linear weights zeroed.")] = None,
    finetune_epochs: Annotated[int, typer.Option("--finetune-epochs", help="Recovery fine-tuning epochs.")] = 0,
    max_accuracy_drop: Annotated[Optional[float], typer.Option("--max-accuracy-drop", help="Fail when top-1 ends more points below the input.")] = None,
    train_data: TrainData = None, val_data: ValData = None, lr: Lr = 1e-3, batch_size: BatchSize = 64,
    weight_decay: WeightDecay = 1e-4, augment: Augment = True, patience: Patience = 0, seed: Seed = 0,
    train_threads: TrainThreads = 0,
    weights: o.Weights = None, eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = "1",
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Remove channels (torch-pruning dependency graph) or zero weights, then optionally fine-tune to recover."""
    options = {"ratio": ratio, "target_macs": target_macs, "importance": importance, "global_pruning": global_pruning,
               "ignore": ignore or [], "round_to": round_to, "prune_attention": prune_attention,
               "unstructured": unstructured, "sparsity": sparsity, "finetune_epochs": finetune_epochs,
               "max_accuracy_drop": max_accuracy_drop,
               **_train_options(train_data, val_data, lr, batch_size, weight_decay, augment, patience, seed, train_threads)}
    _run("prune", model, output, options, weights, eval_data, measure, batch_sizes, threads, budget_s, json_out, markdown, metric, config_extra)


@config_options("distill")
def distill(
    output: OutFolder,
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher: PyTorch folder or factory (its data splits are used by default).")],
    student: Annotated[Optional[str], typer.Option("--student", help="Student: folder (e.g. a pruned model), factory 'file.py:build' or .pt2.")] = None,
    student_weights: Annotated[Optional[Path], typer.Option("--student-weights", help="state_dict for a factory student.")] = None,
    student_width: Annotated[Optional[float], typer.Option("--student-width", help="Derive the student: the teacher at this channel width, in (0, 1).")] = None,
    student_macs: Annotated[Optional[float], typer.Option("--student-macs", help="Derive the student: the widest narrowing with at most this fraction of the MACs.")] = None,
    student_init: Annotated[str, typer.Option("--student-init", help="Derived student: teacher (kept weights) | random")] = "teacher",
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs (the best validation epoch is kept).")] = 20,
    temperature: Annotated[float, typer.Option("--temperature", help="Soft-target temperature.")] = 4.0,
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the soft-target loss vs labels, in [0, 1] (0: labels only).")] = 0.9,
    feature_weight: Annotated[float, typer.Option("--feature-weight", help="Weight of intermediate-feature matching (0: off).")] = 0.0,
    train_data: TrainData = None, val_data: ValData = None, lr: Lr = 1e-3, batch_size: BatchSize = 64,
    weight_decay: WeightDecay = 1e-4, augment: Augment = True, patience: Patience = 0, seed: Seed = 0,
    train_threads: TrainThreads = 0,
    weights: o.Weights = None, eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = "1",
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Knowledge distillation: train a smaller student on the teacher's soft targets (and labels)."""
    options = {"student": student, "student_weights": str(student_weights) if student_weights else None,
               "student_width": student_width, "student_macs": student_macs, "student_init": student_init,
               "epochs": epochs, "temperature": temperature, "alpha": alpha, "feature_weight": feature_weight,
               **_train_options(train_data, val_data, lr, batch_size, weight_decay, augment, patience, seed, train_threads)}
    if student is None and student_width is None and student_macs is None:
        from optkit.types.errors import UsageError

        raise UsageError("distill needs a student", hint="Pass --student MODEL, --student-width 0.5 or --student-macs 0.25")
    _run("distill", teacher, output, options, weights, eval_data, measure, batch_sizes, threads, budget_s, json_out, markdown, metric, config_extra)
