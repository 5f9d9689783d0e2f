"""quantize --engine inc: Intel Neural Compressor 3.x on a PyTorch model, exported to a QDQ ONNX model.

The PT2E flow: ``neural_compressor.torch.export.export`` captures the model (dynamic batch),
``autotune`` tries a few static int8 configurations (``prepare`` -> calibration -> ``convert``)
and keeps the first within the accuracy budget; torch's ONNX exporter turns the result into
QuantizeLinear/DequantizeLinear ONNX that the rest of the chain (compile, profile) takes.

Each trial is judged where it will run: the candidate is exported and its top-1 measured in ONNX
Runtime on the labelled calibration split (not the evaluation split, which then judges the
result). The default order puts symmetric int8 activations (s8s8) first: uint8 activations with
full-range int8 weights saturate in the AVX2/AVX-512 (non-VNNI) u8s8 kernels (digits_cnn: 88.6% vs
99.7%), and INC has no reduce_range. Dynamic int8 is refused: torch's ONNX exporter cannot convert
PT2E dynamic quantization (``choose_qparams``).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from optkit.types.artifact import Artifact
from optkit.types.errors import StepError, UsageError
from optkit.steps.base import StepContext
from optkit.steps.quantize.config import QuantizeConfig

CONFIGS = [  # (label, StaticQuantConfig kwargs), tried in this order
    ("s8s8 minmax", {"act_sym": True, "act_dtype": "int8", "act_algo": "minmax"}),
    ("s8s8 kl", {"act_sym": True, "act_dtype": "int8", "act_algo": "kl"}),
    ("u8s8 minmax", {"act_sym": False, "act_dtype": "uint8", "act_algo": "minmax"}),
]


def require_inc() -> None:
    import logging

    from optkit.types.lazy import require

    import os

    # import-time noise: torchao's missing CUDA kernels on CPU, INC's accelerator detection (its logger
    # takes its level from $LOGLEVEL when created)
    for name in ("torchao", "neural_compressor", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)
    had = "LOGLEVEL" in os.environ
    os.environ.setdefault("LOGLEVEL", "ERROR")
    try:
        require("torchao", "--engine inc (PT2E quantization on torch >= 2.11)")
        require("neural_compressor", "--engine inc")
        import importlib

        importlib.import_module("neural_compressor.common.utils.logger")  # its logger is created now, quietly
    finally:
        if not had:
            os.environ.pop("LOGLEVEL", None)


def check_config(config: QuantizeConfig) -> None:
    if config.mode not in ("static", "auto"):
        raise UsageError(f"--engine inc does not take --mode {config.mode}",
                         hint="Use --mode static (torch's ONNX exporter cannot convert INC's dynamic int8), "
                              "or --engine ort for dynamic/fp16")


def _export_onnx(module, example, path: Path, input_names: list[str], output_names: list[str]) -> None:
    import torch

    from optkit.types.ui import quiet_libraries

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with quiet_libraries():
        torch.onnx.export(module, example, str(path), dynamo=True, external_data=False, input_names=input_names,
                          output_names=output_names, dynamic_shapes=({0: batch},) * len(example))


def fold_weight_quantization(path: Path) -> int:
    """Store constant weights as int8: the exporter writes float weights behind a QuantizeLinear (fake
    quantization); folding it makes the file ~4x smaller and lets ONNX Runtime pick its QDQ kernels.
    Returns the number of weights folded."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    folded, keep = 0, []
    for node in model.graph.node:
        if node.op_type == "Clip" and len(node.input) == 3 and all(i in inits for i in node.input) \
                and numpy_helper.to_array(inits[node.input[0]]).dtype.kind in "iu":
            # the exporter's clamp of an already-int8 weight: fold it so DequantizeLinear reads an initializer
            x, lo, hi = (numpy_helper.to_array(inits[i]) for i in node.input)
            folded_t = numpy_helper.from_array(np.clip(x, lo, hi).astype(x.dtype), node.output[0])
            model.graph.initializer.append(folded_t)
            inits[node.output[0]] = folded_t
            continue
        if node.op_type != "QuantizeLinear" or len(node.input) < 3 or not all(i in inits for i in node.input[:3]):
            keep.append(node)
            continue
        w, scale, zp = (numpy_helper.to_array(inits[i]) for i in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:
            shape = [1] * w.ndim
            shape[axis % w.ndim] = -1
            scale, zp_b = scale.reshape(shape), zp.reshape(shape)
        else:
            zp_b = zp
        info = np.iinfo(zp.dtype)
        # float32 division and round-half-to-even, as QuantizeLinear computes it
        q = np.clip(np.round(w.astype(np.float32) / scale.astype(np.float32)) + zp_b.astype(np.float32),
                    info.min, info.max).astype(zp.dtype)
        inits[node.output[0]] = numpy_helper.from_array(q, node.output[0])  # DequantizeLinear reads it as is
        model.graph.initializer.append(inits[node.output[0]])
        folded += 1
    del model.graph.node[:]
    model.graph.node.extend(keep)
    referenced = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    unused = [t for t in model.graph.initializer if t.name not in referenced]
    for t in unused:
        model.graph.initializer.remove(t)
    onnx.save_model(model, str(path))
    return folded


def quantize_inc(ctx: StepContext, artifact: Artifact, config: QuantizeConfig, out_path: Path,
                 scratch: Path) -> dict[str, Any]:
    require_inc()
    check_config(config)
    import torch
    from neural_compressor.torch.export import export
    from neural_compressor.torch.quantization import StaticQuantConfig, TuningConfig, autotune

    from optkit.backends.torch import load_module
    from optkit.types.ui import quiet_libraries
    from optkit.eval.measure import outputs_on_data
    from optkit.eval.calibration import calibration_data

    calib, calib_source = calibration_data(ctx, artifact, config.calib_data, config.calib_from_eval)
    metric = ctx.settings.metric
    if metric is None:
        raise UsageError("--engine inc tunes on a task metric, and there is none (no labels, no --metric)",
                         hint="Add 'labels' to the .npz, pass --metric (e.g. cosine), or use --engine ort")
    labelled = calib.labels is not None or not metric.needs_labels
    tune_data, tuned_on = (calib, "calibration split") if labelled else (ctx.data, "evaluation split")
    names = [i.name for i in artifact.inputs]
    outputs = [o.name for o in artifact.outputs] or ["output"]
    module = load_module(artifact)
    example = tuple(torch.from_numpy(calib.batch(8)[n]) for n in names)
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with quiet_libraries():
        captured = export(module, example_inputs=example, dynamic_shapes=({0: batch},) * len(example))

    samples = min(config.calib_samples, len(calib))

    def run_fn(model) -> None:
        with torch.no_grad():
            for start in range(0, samples, config.calib_batch_size):
                stop = min(start + config.calib_batch_size, samples)
                model(*(torch.from_numpy(calib.inputs[n][start:stop]) for n in names))

    trials: list[dict[str, Any]] = []
    reference: dict = {}  # the fp32 baseline's outputs (trial 0): what reference metrics compare with

    def eval_fn(model) -> float:
        started = time.perf_counter()
        path = scratch / f"inc_trial{len(trials)}.onnx"
        _export_onnx(copy.deepcopy(model), example, path, names, outputs)  # the exporter may rewrite the graph
        trial = Artifact(path=path, format="onnx", task=artifact.task, inputs=artifact.inputs, outputs=artifact.outputs)
        outs = outputs_on_data(trial, tune_data, ctx.settings)
        if not trials:
            reference.update(outs)
        judged = metric.evaluate(outs, tune_data.inputs, tune_data.labels, reference)
        if judged is None:  # labelled data, or a metric that needs none, was chosen above: not expected
            raise StepError(f"--engine inc: {metric.spec} cannot judge the {tuned_on}", hint="Use --engine ort")
        label = "fp32 baseline" if not trials else CONFIGS[len(trials) - 1][0] if len(trials) <= len(CONFIGS) else "?"
        trials.append({"trial": len(trials), "config": label, "metric": judged.metric, "value": judged.value,
                       "seconds": round(time.perf_counter() - started, 1)})
        ctx.ui.info(f"  inc trial {len(trials) - 1} ({label}): {judged.metric} {judged.value:.4f} on the "
                    f"{tuned_on} (ONNX Runtime)")
        return judged.value if metric.higher_is_better else -judged.value

    configs = [StaticQuantConfig(**kwargs) for _, kwargs in CONFIGS[:config.inc_max_trials]]
    budget = config.max_drop
    with ctx.ui.status("quantize: neural-compressor autotune (PT2E)"), quiet_libraries():
        try:
            best = autotune(captured, TuningConfig(config_set=configs, tolerable_loss=budget / 100.0,
                                                   max_trials=len(configs)),
                            eval_fn=eval_fn, run_fn=run_fn, example_inputs=example)
        except Exception as exc:  # INC raises many kinds; the step reports one line
            raise StepError(f"neural-compressor autotune failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                            hint="Re-run with OPTKIT_DEBUG=1 for the traceback, or use --engine ort") from exc
    if best is None:
        tried = "; ".join(f"{t['config']} {t['metric']} {t['value']:.4f}" for t in trials)
        raise StepError(f"neural-compressor found no configuration within {budget:g} points ({tried})",
                        hint="Raise --max-drop, or use --engine ort with --guard")
    _export_onnx(best, example, out_path, names, outputs)
    folded = fold_weight_quantization(out_path)
    import onnx

    qdq = sum(1 for n in onnx.load(str(out_path)).graph.node if n.op_type == "QuantizeLinear")
    return {"mode": "static", "engine": "inc", "format": "QDQ", "method": trials[-1]["config"],
            "calib_source": calib_source, "calib_samples": samples, "tuned_on": tuned_on,
            "inc_trials": trials, "chosen": trials[-1]["config"], "quantize_linear_nodes": qdq, "int8_weights": folded,
            "tolerable_loss": budget / 100.0}
