"""quantize: int8 (static QDQ or dynamic) or float16, with ONNX Runtime's quantization tools.

static   QDQ int8 calibrated on ``calib_data`` (default: the calibration split recorded with the
         model; the evaluation split only when asked with ``calib_from_eval``, and then said so).
         Activations uint8, weights int8 per channel with ``reduce_range`` (7-bit weights): on this
         CPU full-range u8s8 kernels saturate (digits_cnn with its 1-channel stem quantized at full
         range: 88.1% top-1 vs 99.7%). Convs with fewer input channels than ``skip_small_convs``
         stay fp32: that is where saturation hits, and int8 gains nothing there (measured: 1.298 vs
         1.287 ms for the whole model). ONNX Runtime's pre-processing (symbolic shape
         inference with auto-merge, optimization) runs in a scratch directory. Calibration runs in
         strides of a few batches (``CalibStridedMinMax``), so memory does not grow with samples.
dynamic  int8 weights, activations quantized at run time: for transformer MatMuls/Attention.
         On convolutions it is several times slower on x86 CPUs (ConvInteger); optkit warns.
fp16     float16 weights and compute, inputs/outputs kept fp32, numerically sensitive ops in fp32.
auto     builds each applicable mode, measures accuracy and batch-1 latency, keeps the fastest
         within tolerance, and records why.

Quantization is judged on accuracy, not on exact outputs: the step fails when the task metric
(``--metric``; top-1 for a labelled classifier) drops more than ``max_drop`` below its
input (with ``guard``, after searching for an int8 recipe within it), or - without a task metric, or
when ``min_cosine`` is given - when the mean cosine to its input's outputs falls below ``min_cosine``
(0.99 by default).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from optkit.steps._quantize_modes import (FP16_KEEP_FP32, Candidate, calibration_data, quantize_dynamic,
                                          quantize_fp16, quantize_static)
from optkit.steps.base import BudgetSearchConfig, Step, StepContext, StepResult
from optkit.steps.quantize_recipes import Int8Recipe
from optkit.types.artifact import Artifact
from optkit.types.records import Check, Details


class QuantizeConfig(BudgetSearchConfig):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    mode: Literal["static", "dynamic", "fp16", "auto"] = Field("auto", description="quantization mode (auto: build the modes that apply, keep "
                                                                   "the fastest within tolerance)")
    method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="static calibration method")
    percentile: float = Field(99.999, gt=0, le=100, description="percentile for --method percentile")
    per_channel: bool = Field(True, description="weight scales per channel (default) or per tensor; per channel "
                                                   "needs opset >= 13 (upgraded if needed)")
    reduce_range: bool = Field(True, description="7-bit weights: avoids u8s8 saturation on x86")
    calib_data: str | None = Field(None, description=".npz for calibration (default: the model's calib split)")
    calib_from_eval: bool = Field(False, description="allow calibrating on the evaluation split (optimistic)")
    calib_samples: int = Field(256, ge=1, description="calibration samples used at most")
    calib_batch_size: int = Field(16, ge=1, description="calibration batch size")
    exclude: list[str] = Field([], description="node names or op types kept in float")
    skip_small_convs: int = Field(4, ge=0, description="static: convs with fewer input channels stay fp32 (0: off)")
    keep_io_types: bool = Field(True, description="fp16: keep model inputs/outputs fp32")
    fp16_keep_fp32_ops: list[str] = Field(FP16_KEEP_FP32, description="fp16: op types kept fp32")
    max_drop: float = Field(1.0, ge=0, description="largest drop of the task metric (--metric; default top-1; points for "
                            "fractions) vs the input model; past it the step fails (or the guard searches)")
    guard: bool | None = Field(None, description="accuracy guard: when int8 misses --max-drop, int8 recipes then the most "
                                                 "sensitive nodes go back to float until within it (static/dynamic); "
                                                 "default: on when --max-drop is given")
    guard_max_trials: int = Field(10, ge=1, description="accuracy guard: most re-quantizations tried")
    guard_allow_slower: bool = Field(False, description="accuracy guard: keep a result that is not faster than the input "
                                                        "(by default the guard fails rather than ship it)")
    engine: Literal["ort", "inc"] = Field("ort", description="ort: ONNX Runtime on an ONNX model; inc: Intel Neural "
                                          "Compressor PT2E autotune on a PyTorch model, exported to QDQ ONNX "
                                          "(pip install 'optkit[inc]')")
    inc_max_trials: int = Field(3, ge=1, le=3, description="engine inc: configurations tried (s8s8 minmax, s8s8 kl, u8s8)")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="fail below this mean cosine vs the input's outputs "
                                     "(default: 0.99 when no task metric judges, else not checked)")

    SEARCH: ClassVar[str] = "guard"

    @property
    def accuracy_budget(self) -> float:
        """Task-metric points (raw units) the result may lose vs the input."""
        return self.max_drop


class QuantizeDetails(Details):
    """What the chosen mode did (ORT static/dynamic/fp16 or neural-compressor), how it was judged and chosen."""

    mode: Literal["static", "dynamic", "fp16"]
    check: Check
    format: str | None = None  # "QDQ"
    engine: str | None = None  # "inc" for neural-compressor
    method: str | None = None
    per_channel: bool | None = None
    reduce_range: bool | None = None
    activations: str | None = None
    weights: str | None = None
    recipe: str | None = None  # the guard's int8 recipe
    calib_source: str | None = None
    calib_samples: int | None = None
    calib_batch_size: int | None = None
    skip_small_convs: int | None = None
    excluded: list[str] | None = None
    excluded_by_user: list[str] | None = None
    excluded_small_convs: list[str] | None = None
    exclude_not_found_after_preprocess: list[str] | None = None
    preprocess: str | None = None
    opset_upgraded: list[int] | None = None
    nodes: dict[str, Any] | None = None  # compute nodes int8 / float and why (fp16: nodes kept fp32)
    dynamic_convs: int | None = None
    keep_io_types: bool | None = None
    kept_fp32_ops: list[str] | None = None
    tuned_on: str | None = None  # inc: the split autotune judged on, its trials and choice
    inc_trials: list[dict[str, Any]] | None = None
    chosen: str | None = None
    quantize_linear_nodes: int | None = None
    int8_weights: int | None = None  # inc: constant weights folded to int8
    tolerable_loss: float | None = None
    guard: dict[str, Any] | None = None  # --guard: recipes and trials, what went back to float, timings
    auto: dict[str, Any] | None = None  # --mode auto: each candidate's check and p50, and why one was chosen


# ----------------------------------------------------------------------------- the step

# what `optkit quantize` offers when int8 misses its budget (every flag named here exists on the command)
REMEDIES = ["keep sensitive nodes in float (--exclude NODE_OR_OP, or --guard to find them; "
            "'optkit debug' ranks them)", "try --method entropy or percentile, or another --mode"]


class QuantizeStep(Step):
    name = "quantize"
    summary = "int8 (static QDQ / dynamic) or fp16 quantization, judged on accuracy"
    accepts = ("onnx", "torch")
    produces = "onnx"
    suffix = ".onnx"
    Config = QuantizeConfig
    Details = QuantizeDetails
    for_speed = True

    @classmethod
    def input_formats(cls, config: QuantizeConfig) -> tuple[str, ...]:
        return ("torch",) if config.engine == "inc" else ("onnx",)

    def precheck(self, config: QuantizeConfig, source: Artifact, base: Path) -> None:
        if config.engine == "inc":
            from optkit.steps.quantize_inc import check_config, require_inc

            check_config(config)
            require_inc()

    def run(self, ctx: StepContext, artifact: Artifact, config: QuantizeConfig) -> StepResult:
        from optkit.types.ui import quiet_libraries
        from optkit.eval.measure import static_batch
        from optkit.types.files import scratch_dir

        if config.engine == "inc":
            return self._run_inc(ctx, artifact, config)

        fixed = static_batch(artifact)
        modes = [config.mode] if config.mode != "auto" else self._auto_modes(ctx, artifact, config)
        if "static" not in modes:
            for flag, value in (("--calib-data", config.calib_data), ("--calib-from-eval", config.calib_from_eval)):
                if value:
                    ctx.ui.warn(f"{flag} is ignored: --mode {'/'.join(modes)} does not calibrate")
        if config.guard and modes == ["fp16"]:
            ctx.ui.warn("the accuracy guard is ignored by --mode fp16 (no nodes to keep in float); --max-drop still "
                        "judges it")
        calib = calib_source = None
        if "static" in modes:
            calib, calib_source = calibration_data(ctx, artifact, config.calib_data, config.calib_from_eval)
        parent_out = ctx.parent_outputs()
        candidates = []
        with quiet_libraries(), scratch_dir() as scratch:
            for mode in modes:
                work = scratch / mode
                work.mkdir()

                def build(guarded: tuple[str, ...], recipe: Int8Recipe | None = None, mode=mode, work=work) -> Candidate:
                    trial = work / f"trial{len(list(work.iterdir()))}"
                    trial.mkdir()
                    out_path = trial / "model.onnx"
                    if mode == "static":
                        details = quantize_static(artifact.path, out_path, trial, calib, config, fixed, guarded, recipe)
                        details["calib_source"] = calib_source
                    elif mode == "dynamic":
                        details = quantize_dynamic(artifact.path, out_path, trial, config, guarded)
                    else:
                        details = quantize_fp16(artifact.path, out_path, config)
                    return self._evaluate(ctx, artifact, out_path, details, parent_out, config)

                with ctx.ui.status(f"quantize: {mode}"):
                    cand = build(())
                if config.guard and not cand.check.ok and mode != "fp16":
                    from optkit.steps.quantize_guard import guard

                    cand = guard(ctx, artifact, config, mode, cand, build, calib)
                candidates.append(cand)
            input_p50 = self._time_auto(ctx, artifact, candidates) if config.mode == "auto" else None
            chosen = self._choose(ctx, candidates, config, input_p50)
            shutil.copyfile(chosen.path, ctx.out_tmp)
        details = QuantizeDetails.model_validate({**chosen.details, "check": chosen.check})
        if config.mode == "auto":
            details.auto = {"candidates": [{"mode": c.mode, "check": c.check.to_json(), "p50_ms": c.p50_ms}
                                           for c in candidates],
                            "input_p50_ms": input_p50, "chosen": chosen.mode, "why": chosen.why,
                            "timing": "input and candidates interleaved, batch 1"}
        if details.mode == "dynamic" and details.dynamic_convs:
            ctx.ui.warn(f"dynamic int8 quantized {details.dynamic_convs} Conv node(s): ConvInteger is several times "
                        "slower than fp32 on x86 CPUs; use --mode static for conv nets (see the measured speedup)")
        from optkit.backends import onnx_io

        return StepResult(artifact=onnx_io.produced_artifact(ctx.out_tmp, "quantize", artifact.task), details=details)

    def _run_inc(self, ctx: StepContext, artifact: Artifact, config: QuantizeConfig) -> StepResult:
        from optkit.backends import onnx_io
        from optkit.types.files import scratch_dir
        from optkit.steps.quantize_inc import quantize_inc

        with scratch_dir() as scratch:
            details = quantize_inc(ctx, artifact, config, ctx.out_tmp, scratch)
        cand = self._evaluate(ctx, artifact, ctx.out_tmp, details, ctx.parent_outputs(), config)
        if not cand.check.ok:
            from optkit.eval.compare import tolerance_error

            raise tolerance_error("static quantization", cand.check,
                                  ["quantize the exported ONNX with --engine ort instead (--guard keeps sensitive nodes in float)"])
        details = QuantizeDetails.model_validate({**details, "check": cand.check})
        return StepResult(artifact=onnx_io.produced_artifact(ctx.out_tmp, "quantize", artifact.task), details=details)

    @staticmethod
    def _auto_modes(ctx: StepContext, artifact: Artifact, config: QuantizeConfig) -> list[str]:
        from optkit.backends import onnx_io

        ops = {n.op_type for n in onnx_io.load_model(artifact.path).graph.node}
        has_calib = bool(config.calib_data or artifact.data.get("calib") or config.calib_from_eval)
        modes = ["static"] if has_calib else []
        if ops & {"MatMul", "Attention"}:  # dynamic int8 pays off on MatMul-heavy graphs, not on conv nets
            modes.append("dynamic")
        return modes or ["dynamic"]

    def _evaluate(self, ctx, artifact, path: Path, details: dict, parent_out: dict, config) -> Candidate:
        from optkit.eval.compare import accuracy_check
        from optkit.eval.measure import outputs_on_data

        cand = Artifact(path=path, format="onnx", task=artifact.task, inputs=artifact.inputs, outputs=artifact.outputs)
        check = accuracy_check(parent_out, outputs_on_data(cand, ctx.data, ctx.settings), ctx.data, ctx.settings.metric,
                               config.accuracy_budget, config.min_cosine)
        return Candidate(mode=details["mode"], path=path, details=details, check=check, artifact=cand)

    @staticmethod
    def _time_auto(ctx, artifact: Artifact, candidates: list[Candidate]) -> float | None:
        """Batch-1 p50 of the input and every candidate within tolerance, in one interleaved pass (so the
        choice, and the verdict that it beats the input, hold on a busy machine); returns the input's."""
        from optkit.eval.measure import quick_p50s

        ok = [c for c in candidates if c.check.ok]
        if not ok:
            return None
        with ctx.ui.status(f"quantize auto: timing the input and {len(ok)} candidate(s) interleaved"):
            p50s = quick_p50s([artifact, *(c.artifact for c in ok)], ctx.data, ctx.settings)
        for cand, p50 in zip(ok, p50s[1:]):
            cand.p50_ms = p50
        return p50s[0]

    @staticmethod
    def _choose(ctx, candidates: list[Candidate], config: QuantizeConfig, input_p50: float | None = None) -> Candidate:
        ok = [c for c in candidates if c.check.ok]
        if not ok:
            from optkit.eval.compare import tolerance_error

            raise tolerance_error(f"{'/'.join(c.mode for c in candidates)} quantization", candidates[0].check,
                                  REMEDIES)
        if config.mode != "auto":
            return ok[0]
        best = min(ok, key=lambda c: c.p50_ms)
        if input_p50 is not None and best.p50_ms >= input_p50:
            from optkit.types.errors import StepError

            tried = ", ".join(f"{c.mode} {c.p50_ms:.3f} ms" for c in ok)
            raise StepError(f"quantize --mode auto: no mode within tolerance is faster than the input "
                            f"({tried}; input {input_p50:.3f} ms at batch 1, timed interleaved)",
                            hint="Deploy the input model, or pass --mode static or --mode dynamic to keep a slower one")
        others = "; ".join(f"{c.mode} {c.p50_ms:.3f} ms{'' if c.check.ok else ' (outside tolerance)'}"
                           for c in candidates if c is not best)
        best.why = f"{best.mode}: fastest within tolerance at batch 1 ({best.p50_ms:.3f} ms" + \
                      (f"; {others})" if others else ")")
        return best

    @staticmethod
    def describe(details: QuantizeDetails) -> str:
        nodes = details.nodes or {}
        if details.mode == "fp16":
            text = f"fp16, {nodes.get('kept_fp32', 0)} nodes kept fp32"
        else:
            text = f"{details.mode} int8, {nodes.get('quantized', 0)}/{nodes.get('quantizable', 0)} compute nodes int8"
            float_by = nodes.get("float_by") or {}
            if float_by:
                names = {"small convs": f"conv(s) with < {details.skip_small_convs} input channels (skip_small_convs)",
                         "--exclude": "by --exclude",
                         "recipe": f"by the recipe '{details.recipe}'", "guard": "by the accuracy guard",
                         "other": "not quantized by ONNX Runtime"}
                text += " (float: " + ", ".join(f"{n} {names.get(k, k)}" for k, n in float_by.items()) + ")"
            if details.engine == "inc":
                trials = details.inc_trials
                text = (f"neural-compressor PT2E static int8 ({details.chosen}), {len(trials) - 1} trial(s) tuned on the "
                        f"{details.tuned_on}: " + ", ".join(f"{t['config']} {t['metric']} {t['value']:.4f}" for t in trials))
            elif details.mode == "static":
                text += f"; {details.method} on {details.calib_samples} samples of {details.calib_source}"
        guard = details.guard
        if guard:
            text += f"; guard ({guard.get('budget_text')})"
            if guard.get("recipe"):
                text += f": recipe '{guard['recipe']}' of {len(guard.get('recipes', []))} tried"
            if guard.get("kept_float"):
                text += (f", {len(guard['kept_float'])} of {guard['quantized_nodes_plain']} quantized node(s) kept float "
                         f"(worst: {guard['groups'][0]['why']})")
        if details.auto:
            text += f"; auto: {details.auto['why']}"
        return text
