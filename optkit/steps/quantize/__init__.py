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
weight-only  int4/int8 MatMul weights in blocks (ONNX Runtime's MatMulNBits), activations float: for language
         models, whose decoding reads every weight once per token (``weight_only.py``).
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

from optkit.eval.calibration import calibration_data
from optkit.steps.base import Step, StepContext, StepResult
from optkit.steps.quantize.config import QuantizeConfig, QuantizeDetails
from optkit.steps.quantize.modes import Candidate, ModeBuilder, evaluate
from optkit.types.artifact import Artifact


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
    def input_formats(cls, config: QuantizeConfig, task: str | None = None) -> tuple[str, ...]:
        return ("torch",) if config.engine == "inc" else ("onnx",)

    def precheck(self, config: QuantizeConfig, source: Artifact, base: Path) -> None:
        if config.mode == "weight-only":
            from optkit.steps.quantize.weight_only import check_weight_only

            check_weight_only(config)
        if config.engine == "inc":
            from optkit.steps.quantize.inc import check_config, require_inc

            check_config(config)
            require_inc()

    def run(self, ctx: StepContext, artifact: Artifact, config: QuantizeConfig) -> StepResult:
        from optkit.eval.measure import static_batch
        from optkit.backends import onnx_io
        from optkit.types.files import scratch_dir
        from optkit.types.ui import quiet_libraries

        if config.mode == "weight-only":
            return self._run_weight_only(ctx, artifact, config)
        if config.engine == "inc":
            return self._run_inc(ctx, artifact, config)
        modes: list[str] = [config.mode] if config.mode != "auto" else self._auto_modes(artifact, config)
        self._warn_unused(ctx, config, modes)
        calib, calib_source = (calibration_data(ctx, artifact, config.calib_data, config.calib_from_eval)
                               if "static" in modes else (None, None))
        parent_out = ctx.input_outputs()
        candidates = []
        with quiet_libraries(), scratch_dir() as scratch:
            for mode in modes:
                (scratch / mode).mkdir()
                build = ModeBuilder(ctx, artifact, config, mode, scratch / mode, parent_out, calib, calib_source,
                                    static_batch(artifact))
                with ctx.ui.status(f"quantize: {mode}"):
                    cand = build((), None)
                if config.guard and not cand.check.ok and mode != "fp16":
                    from optkit.steps.quantize.guard import guard

                    cand = guard(ctx, artifact, config, mode, cand, build, calib)
                candidates.append(cand)
            input_p50 = self._time_auto(ctx, artifact, candidates) if config.mode == "auto" else None
            chosen = self._choose(candidates, config, input_p50)
            shutil.copyfile(chosen.path, ctx.out_path)
        details = QuantizeDetails.model_validate({**chosen.details, "check": chosen.check})
        if config.mode == "auto":
            details.auto = {"candidates": [{"mode": c.mode, "check": c.check.to_json(), "p50_ms": c.p50_ms}
                                           for c in candidates],
                            "input_p50_ms": input_p50, "chosen": chosen.mode, "why": chosen.why,
                            "timing": "input and candidates interleaved, batch 1"}
        if details.mode == "dynamic" and details.dynamic_convs:
            ctx.ui.warn(f"dynamic int8 quantized {details.dynamic_convs} Conv node(s): ConvInteger is several times "
                        "slower than fp32 on x86 CPUs; use --mode static for conv nets (see the measured speedup)")
        return StepResult(artifact=onnx_io.produced_artifact(ctx.out_path, "quantize", artifact.task), details=details)

    @staticmethod
    def _warn_unused(ctx: StepContext, config: QuantizeConfig, modes: list[str]) -> None:
        """Options the chosen modes do not use, said once before anything is built."""
        if "static" not in modes:
            for flag, value in (("--calib-data", config.calib_data), ("--calib-from-eval", config.calib_from_eval)):
                if value:
                    ctx.ui.warn(f"{flag} is ignored: --mode {'/'.join(modes)} does not calibrate")
        if config.guard and modes == ["fp16"]:
            ctx.ui.warn("the accuracy guard is ignored by --mode fp16 (no nodes to keep in float); --max-drop still "
                        "judges it")

    def _run_inc(self, ctx: StepContext, artifact: Artifact, config: QuantizeConfig) -> StepResult:
        from optkit.steps.quantize.inc import quantize_inc
        from optkit.backends import onnx_io
        from optkit.types.files import scratch_dir

        with scratch_dir() as scratch:
            details = quantize_inc(ctx, artifact, config, ctx.out_path, scratch)
        cand = evaluate(ctx, artifact, ctx.out_path, details, ctx.input_outputs(), config)
        if not cand.check.ok:
            from optkit.eval.compare import tolerance_error

            raise tolerance_error("static quantization", cand.check,
                                  ["quantize the exported ONNX with --engine ort instead (--guard keeps sensitive nodes in float)"])
        result = QuantizeDetails.model_validate({**details, "check": cand.check})
        return StepResult(artifact=onnx_io.produced_artifact(ctx.out_path, "quantize", artifact.task), details=result)

    @staticmethod
    def _run_weight_only(ctx: StepContext, artifact: Artifact, config: QuantizeConfig) -> StepResult:
        from optkit.backends import onnx_io
        from optkit.steps._budget import check_vs_input
        from optkit.steps.quantize.weight_only import is_causal_export, judge_generative, quantize_weight_only
        from optkit.types.ui import quiet_libraries

        with quiet_libraries(), ctx.ui.status(f"quantize: weight-only int{config.bits}, group {config.group_size}"):
            facts = quantize_weight_only(artifact.path, ctx.out_path, config)
        product = onnx_io.produced_artifact(ctx.out_path, "quantize", artifact.task)
        generation = None
        if is_causal_export(artifact):
            check, generation = judge_generative(ctx, artifact, product, config.min_cosine)
        else:
            check = check_vs_input(ctx, product, config.max_drop, config.min_cosine)
        if not check.ok:
            from optkit.eval.compare import tolerance_error

            raise tolerance_error(f"weight-only int{config.bits} quantization", check,
                                  ["try --bits 8 or a smaller --group-size", "keep the output projection float "
                                   "(--no-lm-head) or other nodes (--exclude NODE_OR_OP)"])
        details = QuantizeDetails.model_validate({**facts, "check": check, "generation": generation})
        return StepResult(artifact=product, details=details)

    @staticmethod
    def _auto_modes(artifact: Artifact, config: QuantizeConfig) -> list[str]:
        from optkit.backends import onnx_io

        ops = {n.op_type for n in onnx_io.load_model(artifact.path).graph.node}
        has_calib = bool(config.calib_data or artifact.calib_data or config.calib_from_eval)
        modes = ["static"] if has_calib else []
        if ops & {"MatMul", "Attention"}:  # dynamic int8 pays off on MatMul-heavy graphs, not on conv nets
            modes.append("dynamic")
        return modes or ["dynamic"]

    @staticmethod
    def _time_auto(ctx: StepContext, artifact: Artifact, candidates: list[Candidate]) -> float | None:
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
    def _choose(candidates: list[Candidate], config: QuantizeConfig, input_p50: float | None = None) -> Candidate:
        ok = [c for c in candidates if c.check.ok]
        if not ok:
            from optkit.eval.compare import tolerance_error

            raise tolerance_error(f"{'/'.join(c.mode for c in candidates)} quantization", candidates[0].check,
                                  REMEDIES)
        if config.mode != "auto":
            return ok[0]
        timed = {id(c): c.p50_ms for c in ok if c.p50_ms is not None}  # auto timed every one within tolerance
        best = min(ok, key=lambda c: timed[id(c)])
        if input_p50 is not None and timed[id(best)] >= input_p50:
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
        if details.mode == "weight-only":
            return _describe_weight_only(details)
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
                trials = details.inc_trials or []
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


def _describe_weight_only(details: QuantizeDetails) -> str:
    nodes = details.nodes or {}
    text = (f"weight-only int{details.bits} (group {details.group_size}, "
            f"{'symmetric' if details.symmetric else 'asymmetric'}"
            f"{', int8 compute' if details.accuracy_level == 4 else ''}), {nodes.get('quantized', 0)}/"
            f"{nodes.get('quantizable', 0)} weights in blocks; lm_head {details.lm_head or 'none found'}, "
            f"embedding {details.embedding}")
    gen = details.generation
    if gen:
        text += (f"; vs input on {gen.prompts} prompt(s): logits cosine {gen.logits_cosine:.4f}, greedy tokens "
                 f"{100 * gen.token_agreement:.0f}% agree ({gen.same_continuations} identical)")
    return text
