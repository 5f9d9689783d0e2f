"""ONNX Runtime quantization for the quantize step: graph facts (compute nodes, exclusions, thin convs),
calibration data fed in strides, the three modes (static QDQ, dynamic, fp16) with their node counts, and the
candidates they build, each judged against the step's input."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.steps._budget import check_vs_input
from optkit.steps._onnx_common import opset_of
from optkit.steps.base import StepContext
from optkit.steps.quantize.config import QuantizeConfig
from optkit.steps.quantize.recipes import Int8Recipe, group_nodes
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.records import Check

if TYPE_CHECKING:
    import numpy as np

    from optkit.eval.data import EvalData

COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Attention")


# ----------------------------------------------------------------------------- graph facts

def _producers(model) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def float_compute_nodes(model) -> list[str]:
    """Compute-heavy nodes still running in float: not integer ops, and not reading both operands (data and
    weight, or two activations) from DequantizeLinear. QDQ also quantizes a MatMul's *output*, so a node kept
    float can read one dequantized operand and still run in float."""
    producers = _producers(model)
    names = []
    for node in model.graph.node:
        operands = [i for i in node.input[:2] if i]
        if node.op_type in COMPUTE_OPS and not all(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in operands):
            names.append(node.name)
    return names


def resolve_exclude(model, patterns: list[str], origin: str) -> list[str]:
    names = {n.name for n in model.graph.node}
    ops = {n.op_type for n in model.graph.node}
    unmatched = [p for p in patterns if p not in names and p not in ops]
    if unmatched:
        raise UsageError(f"--exclude {', '.join(repr(p) for p in unmatched)} matches no node name or op type in {origin}",
                         hint=f"Op types in this model: {', '.join(sorted(ops))}")
    return sorted(n.name for n in model.graph.node if n.name in patterns or n.op_type in patterns)


def small_convs(model, min_channels: int) -> list[str]:
    """Convs whose input has fewer than ``min_channels`` channels in all (a 1- or 3-channel stem).

    The weight's dim 1 is channels per group: a depthwise conv (group = channels) has 1 there but reads
    every channel of a wide input, so it is counted by ``dims[1] * group`` and quantized."""
    if min_channels <= 0:
        return []
    shapes = {t.name: list(t.dims) for t in model.graph.initializer}

    def group(node) -> int:
        return next((a.i for a in node.attribute if a.name == "group"), 1)

    return sorted(n.name for n in model.graph.node
                  if n.op_type == "Conv" and len(n.input) > 1 and len(shapes.get(n.input[1], [])) >= 2
                  and shapes[n.input[1]][1] * group(n) < min_channels)


# ----------------------------------------------------------------------------- calibration data

class _StridedReader:
    """ONNX Runtime CalibrationDataReader over an EvalData, in batches, with set_range for strides.

    ``whole_batches``: only full batches (the tail dropped): ONNX Runtime's histogram calibrators (entropy,
    percentile) stack every batch's activations into one array and fail on a shorter last batch."""

    def __init__(self, data: EvalData, batch_size: int, samples: int, whole_batches: bool = False) -> None:
        self.data, self.batch_size = data, batch_size
        self.samples = min(samples, len(data))
        if whole_batches and self.samples > batch_size:
            self.samples -= self.samples % batch_size
        self.batches = math.ceil(self.samples / batch_size)
        self.set_range(0, self.batches)

    def __len__(self) -> int:
        return self.batches

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(range(start_index, min(end_index, self.batches)))

    def get_next(self):
        i = next(self._next, None)
        if i is None:
            return None
        start, end = i * self.batch_size, min((i + 1) * self.batch_size, self.samples)
        return {k: v[start:end] for k, v in self.data.inputs.items()}


def _stride(batches: int, most: int = 4) -> int:
    return max(d for d in range(1, min(most, batches) + 1) if batches % d == 0)


@dataclass
class Candidate:
    """A quantized model built while choosing (a mode, a guard trial): its file, the mode's facts, its accuracy
    check against the input and, once timed side by side, its batch-1 p50."""

    mode: str
    path: Path
    details: dict[str, Any]  # what quantize_static / quantize_dynamic / quantize_fp16 / quantize_inc report
    check: Check
    artifact: Artifact
    p50_ms: float | None = None
    why: str | None = None  # auto: why it was chosen


def evaluate(ctx: StepContext, artifact: Artifact, path: Path, details: dict[str, Any],
             parent_out: dict[str, np.ndarray], config: QuantizeConfig) -> Candidate:
    """The quantized file at ``path`` as a candidate, judged against the step's input on the evaluation split."""
    cand = Artifact(path=path, format="onnx", task=artifact.task, inputs=artifact.inputs, outputs=artifact.outputs)
    check = check_vs_input(ctx, cand, config.max_drop, config.min_cosine, parent_out)
    return Candidate(mode=details["mode"], path=path, details=details, check=check, artifact=cand)


@dataclass
class ModeBuilder:
    """Builds one mode's candidates - the plain one, then the guard's recipes and trials - each in a folder of its
    own under ``work``, each judged against the input. ``guarded``: nodes kept float; ``recipe``: an int8 recipe."""

    ctx: StepContext
    artifact: Artifact
    config: QuantizeConfig
    mode: str
    work: Path
    parent_out: dict[str, np.ndarray]
    calib: EvalData | None = None  # static only
    calib_source: str | None = None
    fixed_batch: int | None = None

    def __call__(self, guarded: tuple[str, ...], recipe: Int8Recipe | None) -> Candidate:
        trial = self.work / f"trial{len(list(self.work.iterdir()))}"
        trial.mkdir()
        out_path = trial / "model.onnx"
        src, config = self.artifact.path, self.config
        if self.mode == "static":
            assert self.calib is not None, "static quantization is built with its calibration data"
            details = quantize_static(src, out_path, trial, self.calib, config, self.fixed_batch, guarded, recipe)
            details["calib_source"] = self.calib_source
        elif self.mode == "dynamic":
            details = quantize_dynamic(src, out_path, trial, config, guarded)
        else:
            details = quantize_fp16(src, out_path, config)
        return evaluate(self.ctx, self.artifact, out_path, details, self.parent_out, config)


# ----------------------------------------------------------------------------- the modes

def _upgrade_opset(model, details: dict):
    if opset_of(model) >= 13:
        return model
    from onnx import version_converter

    details["opset_upgraded"] = [opset_of(model), 13]
    return version_converter.convert_version(model, 13)


def _prepare(src: Path, scratch: Path, config: QuantizeConfig, details: dict) -> tuple[Path, Any, list[str]]:
    """Opset upgrade (per-channel needs 13), exclusions checked, ORT pre-processing: (path, model, the nodes
    --exclude names)."""
    import onnx

    model = _upgrade_opset(onnx.load(str(src)), details)
    resolve_exclude(model, config.exclude, src.name)  # every pattern must match the model the user gave
    upgraded = scratch / "upgraded.onnx"
    onnx.save_model(model, str(upgraded))
    from optkit.backends.onnxruntime import preprocess_for_quantization

    pre_path = preprocess_for_quantization(upgraded, scratch / "pre.onnx", details)
    pre = onnx.load(str(pre_path))
    excluded = sorted(n.name for n in pre.graph.node if n.name in config.exclude or n.op_type in config.exclude)
    lost = sorted(set(config.exclude) - {n.name for n in pre.graph.node} - {n.op_type for n in pre.graph.node})
    if lost:  # pre-processing fused or renamed them
        details["exclude_not_found_after_preprocess"] = lost
    return pre_path, pre, excluded


def quantize_static(src: Path, dst: Path, scratch: Path, calib: EvalData, config: QuantizeConfig,
                    fixed_batch: int | None, guarded: tuple[str, ...] = (), recipe: Int8Recipe | None = None) -> dict:
    """``guarded``: nodes the accuracy guard keeps float; ``recipe``: the guard's int8 recipe (op types,
    node groups kept float, calibration method, symmetric activations, SmoothQuant)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    method = (recipe.method if recipe else None) or config.method
    symmetric = bool(recipe and recipe.activation_symmetric)
    details: dict[str, Any] = {"mode": "static", "format": "QDQ", "method": method,
                               "per_channel": config.per_channel, "reduce_range": config.reduce_range,
                               "activations": "uint8 symmetric" if symmetric else "uint8", "weights": "int8"}
    pre_path, pre, user_excluded = _prepare(src, scratch, config, details)
    small = small_convs(pre, config.skip_small_convs)
    by_recipe = group_nodes(pre, recipe.float_groups) if recipe else []
    names = {n.name for n in pre.graph.node}
    by_guard = sorted(set(guarded) & names)
    excluded = sorted(set(user_excluded) | set(small) | set(by_recipe) | set(by_guard))
    extra = {"CalibStridedMinMax": None, "CalibPercentile": config.percentile,
             "WeightSymmetric": True, "ActivationSymmetric": symmetric}
    if recipe and recipe.smooth_quant:
        extra.update({"SmoothQuant": True, "SmoothQuantAlpha": 0.5})
    if recipe:
        details["recipe"] = recipe.name
    batch = fixed_batch or config.calib_batch_size
    reader = _StridedReader(calib, batch, config.calib_samples, whole_batches=method != "minmax")
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    extra["CalibStridedMinMax"] = _stride(len(reader))
    ort_quantize_static(
        str(pre_path), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
        reduce_range=config.reduce_range, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded or None, calibrate_method=methods[method],
        op_types_to_quantize=list(recipe.op_types) if recipe and recipe.op_types else None, extra_options=extra)
    compute = [n.name for n in pre.graph.node if n.op_type in COMPUTE_OPS]
    details.update({"calib_samples": reader.samples, "calib_batch_size": batch,
                    "excluded": excluded, "excluded_by_user": user_excluded,
                    "excluded_small_convs": small, "skip_small_convs": config.skip_small_convs})
    details["nodes"] = _node_counts(compute, onnx.load(str(dst)), {
        "--exclude": user_excluded, "small convs": small, "recipe": by_recipe, "guard": by_guard})
    return details


def quantize_dynamic(src: Path, dst: Path, scratch: Path, config: QuantizeConfig, guarded: tuple[str, ...] = ()) -> dict:
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    details: dict[str, Any] = {"mode": "dynamic", "per_channel": config.per_channel, "weights": "int8",
                               "activations": "uint8 at run time"}
    pre_path, pre, user_excluded = _prepare(src, scratch, config, details)
    by_guard = sorted(set(guarded) & {n.name for n in pre.graph.node})
    excluded = sorted(set(user_excluded) | set(by_guard))
    # quantize_dynamic rewrites each Gemm as MatMul ('<name>_MatMul') + Add before quantizing: exclude those names too
    gemms = {n.name for n in pre.graph.node if n.op_type == "Gemm"}
    to_exclude = sorted(set(excluded) | {f"{n}_MatMul" for n in excluded if n in gemms})
    ort_quantize_dynamic(str(pre_path), str(dst), weight_type=QuantType.QInt8, per_channel=config.per_channel,
                         reduce_range=config.reduce_range, nodes_to_exclude=to_exclude or None)
    compute = [n.name for n in pre.graph.node if n.op_type in COMPUTE_OPS]
    convs = sum(1 for n in pre.graph.node if n.op_type == "Conv" and n.name not in excluded)
    details.update({"excluded": excluded, "dynamic_convs": convs,
                    "nodes": _node_counts(compute, onnx.load(str(dst)), {"--exclude": user_excluded, "guard": by_guard})})
    return details


def quantize_fp16(src: Path, dst: Path, config: QuantizeConfig) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    excluded = resolve_exclude(model, config.exclude, src.name)
    blocked_ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(config.fp16_keep_fp32_ops))
    converted = convert_float_to_float16(model, keep_io_types=config.keep_io_types, op_block_list=blocked_ops,
                                         node_block_list=excluded)
    from onnxruntime.transformers.onnx_model import OnnxModel

    OnnxModel(converted).topological_sort()  # the converter appends its Cast nodes out of order
    onnx.save_model(converted, str(dst))
    kept = sum(1 for n in model.graph.node if n.op_type in blocked_ops or n.name in excluded)
    return {"mode": "fp16", "keep_io_types": config.keep_io_types, "kept_fp32_ops": config.fp16_keep_fp32_ops,
            "excluded": excluded, "nodes": {"total": len(model.graph.node), "kept_fp32": kept}}


def _node_counts(compute: list[str], quantized_model, reasons: dict[str, list[str]]) -> dict[str, Any]:
    """Compute nodes (Conv/MatMul/Gemm/Attention) in int8, and every one left float counted once under the
    first reason that kept it (--exclude, small convs, the guard's recipe, the guard); 'other': ORT did not
    quantize it (no kernel for its inputs)."""
    # dynamic quantization renames a float Gemm to '<name>_MatMul' (see quantize_dynamic)
    still_float = {n.removesuffix("_MatMul") for n in float_compute_nodes(quantized_model)} & set(compute)
    left, float_by = set(still_float), {}
    for reason, names in reasons.items():
        hit = left & set(names)
        if hit:
            float_by[reason] = len(hit)
            left -= hit
    if left:
        float_by["other"] = len(left)
    return {"quantizable": len(compute), "quantized": len(compute) - len(still_float), "float": len(still_float),
            "float_by": float_by, "excluded": sum(v for k, v in float_by.items() if k != "other")}
