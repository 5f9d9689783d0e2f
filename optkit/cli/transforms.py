"""optkit simplify | fuse | quantize IN -o OUT: the ONNX -> ONNX steps, each a one-step recipe."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options

InputModel = Annotated[str, typer.Argument(help="An ONNX model (with or without an optkit sidecar).")]


def _run(step: str, model: str, output: Path, options: dict[str, Any], eval_data, measure, batch_sizes, threads,
         budget_s, json_out, markdown, metric: str | None = None, extra: dict | None = None) -> None:
    from optkit.cli.common import emit_ledger, measure_block, run_one_step

    options = {**(extra or {}), **options}  # generated options (from the step's Config) and declared ones
    result, ui = run_one_step(model=model, step=step, options={k: v for k, v in options.items() if v is not None},
                              output=output, eval_data=eval_data, metric=metric,
                              measure=measure_block(batch_sizes, threads, budget_s, measure))
    if measure or json_out or markdown:
        emit_ledger(ui, result.final, as_json=json_out, markdown=markdown, latency=result.ledger_latency)


@config_options("simplify")
def simplify(
    model: InputModel, output: o.Output,
    engine: Annotated[str, typer.Option("--engine", help="onnxslim (default) | onnxsim")] = "onnxslim",
    atol: o.Atol = 1e-4, rtol: o.Rtol = 1e-3,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = "1",
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Constant folding, shape inference and dead-node removal; fails if outputs change beyond tolerance."""
    _run("simplify", model, output, {"engine": engine, "atol": atol, "rtol": rtol}, eval_data, measure,
         batch_sizes, threads, budget_s, json_out, markdown, metric, config_extra)


@config_options("fuse")
def fuse(
    model: InputModel, output: o.Output,
    level: Annotated[str, typer.Option("--level", help="basic (portable) | extended (ORT-only ops) | all (hardware-specific)")] = "basic",
    transformer: Annotated[str, typer.Option("--transformer", help="auto | on | off: ONNX Runtime transformer fusions")] = "auto",
    model_type: Annotated[str, typer.Option("--model-type", help="transformer optimizer model type (bert, vit, ...)")] = "bert",
    num_heads: Annotated[int, typer.Option("--num-heads", help="attention heads (0: detect)")] = 0,
    hidden_size: Annotated[int, typer.Option("--hidden-size", help="hidden size (0: detect)")] = 0,
    skip_layer_norm: Annotated[str, typer.Option("--skip-layer-norm", help="auto (time both) | fused | split: SkipLayerNormalization after attention fusion")] = "auto",
    atol: o.Atol = 1e-4, rtol: o.Rtol = 1e-3,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = "1",
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Operator fusion (Conv+BN, transformer Attention/LayerNorm/GELU, ORT graph optimizations), counted."""
    _run("fuse", model, output, {"level": level, "transformer": transformer, "model_type": model_type,
                                 "num_heads": num_heads, "hidden_size": hidden_size, "skip_layer_norm": skip_layer_norm,
                                 "atol": atol, "rtol": rtol},
         eval_data, measure, batch_sizes, threads, budget_s, json_out, markdown, metric, config_extra)


@config_options("quantize")
def quantize(
    model: InputModel, output: o.Output,
    mode: Annotated[str, typer.Option("--mode", help="static | dynamic | fp16 | auto")] = "auto",
    method: Annotated[str, typer.Option("--method", help="static calibration: minmax | entropy | percentile")] = "minmax",
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help=".npz for calibration (default: the model's calib split).")] = None,
    calib_from_eval: Annotated[bool, typer.Option("--calib-from-eval", help="Calibrate on the evaluation split if nothing else exists (optimistic).")] = False,
    calib_samples: Annotated[int, typer.Option("--calib-samples", help="Calibration samples used at most.")] = 256,
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Weight scales per channel (default) or per tensor.")] = True,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Node name or op type to keep in float (repeat).")] = None,
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--no-keep-io-types", help="fp16: keep inputs/outputs fp32.")] = True,
    max_accuracy_drop: Annotated[float, typer.Option("--max-accuracy-drop", help="Fail when the task metric (--metric; default top-1) drops more than this (points for fractions).")] = 1.0,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Accuracy guard: budget on the task metric (cosine without one); beyond it, int8 recipes (op types, symmetric activations) then the most sensitive nodes go back to float until within it.")] = None,
    guard_max_trials: Annotated[int, typer.Option("--guard-max-trials", help="Accuracy guard: most re-quantizations tried.")] = 10,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Fail below this mean cosine to the input's outputs (default: 0.99 when no task metric judges).")] = None,
    guard_allow_slower: Annotated[bool, typer.Option("--guard-allow-slower", help="Accuracy guard: keep a result that is not faster than the input (default: fail).")] = False,
    engine: Annotated[str, typer.Option("--engine", help="ort (ONNX model) | inc (PyTorch model: Neural Compressor PT2E autotune -> QDQ ONNX; pip install 'optkit[inc]')")] = "ort",
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = "1",
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """int8 (static QDQ / dynamic) or fp16 quantization with ONNX Runtime, judged on accuracy."""
    _run("quantize", model, output, {
        "mode": mode, "method": method, "calib_data": str(calib_data) if calib_data else None,
        "calib_from_eval": calib_from_eval, "calib_samples": calib_samples, "per_channel": per_channel,
        "exclude": exclude or [], "keep_io_types": keep_io_types, "max_accuracy_drop": max_accuracy_drop,
        "max_drop": max_drop, "guard_max_trials": guard_max_trials, "engine": engine, "min_cosine": min_cosine,
        "guard_allow_slower": guard_allow_slower,
    }, eval_data, measure, batch_sizes, threads, budget_s, json_out, markdown, metric, config_extra)


@config_options("compile")
def compile_cmd(
    model: InputModel, output: o.Output,
    target: Annotated[str, typer.Option("--target", help="ort-cpu | openvino-cpu | tensorrt (GPU) | ort-cuda (GPU)")] = "ort-cpu",
    precision: Annotated[str, typer.Option("--precision", help="fp32 | fp16 | bf16 | int8 (what the target supports)")] = "fp32",
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="int8 from fp32: calibration .npz (default: the calib split).")] = None,
    compress_to_fp16: Annotated[bool, typer.Option("--compress-to-fp16", help="openvino: store weights as fp16.")] = False,
    shapes: Annotated[Optional[str], typer.Option("--shapes", help="tensorrt: NAME:MIN,OPT,MAX e.g. input:1x1x32x32,1x1x32x32,32x1x32x32")] = None,
    max_accuracy_drop: Annotated[float, typer.Option("--max-accuracy-drop", help="Low precision: allowed drop of the task metric (--metric; default top-1; points for fractions).")] = 1.0,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="openvino int8 from fp32: NNCF quantization with accuracy control keeping the task metric (cosine without one) within this drop.")] = None,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", help="Low precision: fail below this mean cosine to the input's outputs (default: 0.99 when no task metric judges).")] = None,
    atol: o.Atol = 1e-4, rtol: o.Rtol = 1e-3,
    eval_data: o.EvalData = None, metric: o.Metric = None, measure: o.Measure = True, batch_sizes: o.BatchSizes = "1",
    threads: o.Threads = 1, budget_s: o.Budget = 1.0, json_out: o.Json = False, markdown: o.Markdown = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Build the artifact a runtime deploys: ONNX Runtime (tuned session), OpenVINO IR, TensorRT engine."""
    _run("compile", model, output, {
        "target": target, "precision": precision, "calib_data": str(calib_data) if calib_data else None,
        "compress_to_fp16": compress_to_fp16, "shapes": shapes, "max_accuracy_drop": max_accuracy_drop, "max_drop": max_drop,
        "min_cosine": min_cosine, "atol": atol, "rtol": rtol}, eval_data, measure, batch_sizes, threads, budget_s, json_out, markdown, metric, config_extra)
