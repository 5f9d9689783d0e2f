"""compile: an ONNX model (a torch model for tflite) -> the artifact a given runtime deploys.

Each target is built by its backend (``Backend.compile_targets``): ort-cpu and ort-cuda by
``backends/onnxruntime.py``, openvino-cpu by ``backends/openvino.py`` (NNCF int8 and accuracy control
included), tensorrt by ``backends/tensorrt.py``, tflite by ``backends/litert.py``. This step holds what they
share: the options, the dispatch, the calibration read from the run's data, and the check of the result.

fp32 outputs must match the input within atol/rtol; bf16/fp16/int8 are judged on accuracy like
quantize (``max_drop`` points of top-1 vs the input, or ``min_cosine`` without labels).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from optkit.backends.compiling import CompileFacts
from optkit.steps._budget import MAX_DROP_HELP
from optkit.steps.base import BudgetSearchConfig, Step, StepContext, StepResult
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.records import Check, Details, Verification

if TYPE_CHECKING:
    from optkit.backends.compiling import AccuracyControl, Calibration, CompileRequest, CompileTarget
    from optkit.eval.data import EvalData

GENERATION = "text-generation"
CAUSAL_LOADER = "optkit.backends.hf_causal:load_causal_model"  # the source's transformers AutoModelForCausalLM
TARGETS = {  # target -> (output format, suffix, precisions)
    "ort-cpu": ("onnx", ".onnx", ("fp32",)),
    "openvino-cpu": ("openvino", ".xml", ("fp32", "bf16", "int8", "int4")),  # int4: text-generation weights
    "tensorrt": ("tensorrt", ".engine", ("fp32", "fp16", "int8")),
    "ort-cuda": ("onnx", ".onnx", ("fp32", "fp16")),
    "tflite": ("tflite", ".tflite", ("fp32", "fp16", "int8-dynamic", "int8")),
}


class CompileConfig(BudgetSearchConfig):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    target: Literal["ort-cpu", "openvino-cpu", "tensorrt", "ort-cuda", "tflite"] = Field(
        description="deployment runtime (tensorrt and ort-cuda need a GPU; tflite takes the torch model)")
    precision: Literal["fp32", "fp16", "bf16", "int8", "int8-dynamic", "int4"] = Field(
        "fp32", description="compute precision (what the target supports; int8-dynamic: tflite; for a "
                            "text-generation model on openvino-cpu, int8/int4 are NNCF weight-only compression)")
    group_size: int = Field(128, ge=-1, description="openvino int4 weights (text-generation): input channels per "
                            "scale (-1: per output channel)")
    ratio: float = Field(1.0, ge=0, le=1, description="openvino int4 weights (text-generation): share of the layers "
                         "in int4, the rest int8")
    symmetric: bool = Field(False, description="openvino int4 weights (text-generation): symmetric (INT4_SYM) "
                            "instead of asymmetric")
    awq: bool = Field(False, description="openvino int4 weights (text-generation): NNCF's data-aware AWQ on the "
                      "calibration text")
    scale_estimation: bool = Field(False, description="openvino int4 weights (text-generation): NNCF's data-aware "
                                   "scale estimation on the calibration text")
    calib_data: str | None = Field(None, description="int8 from fp32: calibration .npz (default: the calib split)")
    calib_samples: int = Field(300, ge=1, description="int8 from fp32: calibration samples (NNCF subset size)")
    nncf_preset: Literal["performance", "mixed"] = Field("performance", description="openvino int8 from fp32: NNCF "
                                                         "preset (mixed: asymmetric activations)")
    fast_bias_correction: bool = Field(True, description="openvino int8 from fp32: NNCF's fast bias correction (off: "
                                                         "the slower, more exact one)")
    ort_session: Literal["tune", "default", "extended", "no-mem-pattern", "no-spinning"] = Field(
        "tune", description="ort-cpu: session settings; tune times them all side by side and keeps the fastest "
                            "(a choice that can differ between runs), a name pins one (a rebuild is then identical)")
    compress_to_fp16: bool = Field(False, description="openvino: store weights as fp16 (compute precision unchanged)")
    shapes: str | None = Field(None, description="tensorrt: NAME:MIN,OPT,MAX shapes, e.g. "
                                                 "input:1x1x32x32,1x1x32x32,32x1x32x32 (default: batch 1..32, opt 1)")
    workspace_gb: float = Field(4.0, gt=0, description="tensorrt: builder workspace in GiB")
    layout: Literal["nchw", "nhwc"] = Field("nchw", description="tflite: image input layout; nhwc converts with "
                                            "litert-torch's channel-last option (the runner transposes NCHW data)")
    fixed_batch: int | None = Field(None, ge=1, le=4096, description="tflite: convert at this batch size instead of "
                                    "a dynamic one (a model whose dynamic batch does not convert gets 1)")
    atol: float = Field(1e-4, ge=0, description="fp32 targets: absolute tolerance vs the input")
    rtol: float = Field(1e-3, ge=0, description="fp32 targets: relative tolerance vs the input")
    max_drop: float = Field(1.0, ge=0, description=f"low precision: {MAX_DROP_HELP}")
    accuracy_control: bool | None = Field(None, description="openvino int8 from fp32: NNCF quantization with accuracy "
                                          "control, keeping the task metric (cosine without one) within --max-drop on "
                                          "the calibration samples; default: on when --max-drop is given")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="low precision: minimum mean cosine to the input's "
                                     "outputs (default: 0.99 when no task metric judges, else not checked)")

    SEARCH: ClassVar[str] = "accuracy_control"

    def search_applies(self) -> bool:  # NNCF's accuracy control: OpenVINO int8 only
        return self.target == "openvino-cpu" and self.precision == "int8"


class CompileDetails(Details, CompileFacts):
    """What was built for which target; the backend's own facts (``CompileFacts``: OpenVINO/NNCF, TensorRT builder,
    ORT session tuning, LiteRT conversion) beside them."""

    target: str
    precision: str  # what runs: "int8 (QDQ input)" when an int8 model is compiled at fp32
    check: Check | Verification | None = None  # accuracy check (lossy precisions) or exact comparison


class CompileStep(Step):
    name = "compile"
    summary = "build the artifact a runtime deploys (ONNX Runtime, OpenVINO, TensorRT, LiteRT)"
    accepts = ("onnx",)
    produces = "onnx"  # refined per target by output_format()
    suffix = ".onnx"
    Config = CompileConfig
    Details = CompileDetails
    for_speed = True

    @classmethod
    def input_formats(cls, config: BaseModel, task: str | None = None) -> tuple[str, ...]:
        target = _config(config).target  # openvino-cpu converts a text-generation torch model itself
        if target == "tflite":
            return ("torch",)
        return (*cls.accepts, "torch") if target == "openvino-cpu" and task == GENERATION else cls.accepts

    @classmethod
    def output_format(cls, config: BaseModel) -> tuple[str, str]:
        fmt, suffix, _ = TARGETS[_config(config).target]
        return fmt, suffix

    def precheck(self, config: BaseModel, source: Artifact, base: Path) -> None:
        """The precision and the runtime are checked before any step of the chain runs."""
        config = _config(config)
        _, _, precisions = TARGETS[config.target]
        generative = source.task == GENERATION
        if (config.precision == "int4" and not generative) or (
                generative and config.precision not in ("fp32", "int8", "int4")):
            raise UsageError(f"--precision {config.precision} does not apply here: int4 is the weight-only "
                             "compression of a text-generation model", hint="Use fp32 or int8 (int4: text-generation)")
        if config.precision not in precisions:
            raise UsageError(f"--target {config.target} does not take --precision {config.precision}",
                             hint=f"Use one of: {', '.join(precisions)}"
                                  + (" (int8 for ONNX Runtime: run 'optkit quantize' first)" if config.target == "ort-cpu" else ""))
        _target(config).require()

    def run(self, ctx: StepContext, artifact: Artifact, config: BaseModel) -> StepResult:
        from optkit.backends import backend
        from optkit.backends.onnx_io import int8_kind

        config = _config(config)
        self.precheck(config, artifact, ctx.base)
        if artifact.format == "torch" and config.target == "openvino-cpu":  # the engine let torch through for this
            if artifact.task != GENERATION:
                raise UsageError("--target openvino-cpu takes onnx models (or a text-generation torch model), but "
                                 "it would get torch", hint="Export it first ('optkit export'), then compile")
            return _causal_lm(ctx, artifact, config)
        if config.precision != "int8" and config.calib_data:
            ctx.ui.warn(f"--calib-data is ignored: only --precision int8 calibrates (this is {config.precision})")
        assert ctx.out_tmp is not None
        for suffix in backend(TARGETS[config.target][0]).companions:  # e.g. the IR's .bin, staged beside it
            assert ctx.companion is not None
            ctx.companion(suffix)
        built = _target(config).build(_request(ctx, artifact, config, ctx.out_tmp))
        # the label says what runs: an int8 model compiled at the default "fp32" still runs its int8 kernels
        already = int8_kind(artifact.path) if artifact.format == "onnx" else None
        precision = f"int8 ({already} input)" if already and config.precision == "fp32" else config.precision
        details = CompileDetails.model_validate({**built.facts.to_json(), "target": config.target,
                                                 "precision": precision})
        details.check = self._check(ctx, artifact, built.artifact, config)
        return StepResult(artifact=built.artifact, details=details)

    @staticmethod
    def _check(ctx: StepContext, parent: Artifact, out: Artifact, config: CompileConfig) -> Check | Verification:
        from optkit.eval.compare import accuracy_check, tolerance_error, verify_outputs
        from optkit.eval.measure import outputs_on_data

        from optkit.backends.onnx_io import is_qdq

        lossy = config.precision != "fp32" or (config.target == "openvino-cpu" and is_qdq(parent.path))
        if not lossy:
            return verify_outputs(parent, out, ctx.data, atol=config.atol, rtol=config.rtol, batch_sizes=[1, 8],
                                  threads=ctx.settings.threads, what=f"compiled ({config.target})",
                                  hint="Report it; loosen --atol/--rtol only if this drift is acceptable")
        assert ctx.parent_outputs is not None  # the engine gives a producing step its input's outputs
        check = accuracy_check(ctx.parent_outputs(), outputs_on_data(out, ctx.data, ctx.settings), ctx.data,
                               ctx.settings.metric, config.max_drop, config.min_cosine)
        if not check.ok:
            remedies = ["try another --precision"]
            if config.target == "openvino-cpu" and config.precision == "int8":
                remedies.insert(0, "--accuracy-control keeps sensitive ops in float within --max-drop (NNCF)")
            raise tolerance_error(f"{config.target} {config.precision}", check, remedies)
        return check

    @staticmethod
    def describe(details: CompileDetails) -> str:
        text = f"{details.target} {details.precision}"
        if details.chosen and details.tuning:
            text += f"; fastest session settings {details.chosen} of {len(details.tuning)}"
        elif details.chosen:
            text += f"; session settings {details.chosen} (pinned)"
        if details.int8_source:
            text += f"; int8 from {details.int8_source}"
        if details.tflite:
            t = details.tflite
            text += (f"; {t.get('converter')}, {t.get('layout')}, batch {t.get('batch')}"
                     + (f", {t['recipe']}" if t.get("recipe") else "") + (f", {t['calibration']}" if t.get("calibration") else ""))
        weights = details.nncf if details.nncf and "mode" in details.nncf else None  # text-generation: weight-only
        if weights:
            text += (f"; NNCF weights {weights['mode']}" + (f" group {weights['group_size']}" if "group_size" in weights
                                                            else "") + (f" ratio {weights['ratio']:g}" if "ratio" in weights else "")
                     + "".join(f" +{m}" for m in ("awq", "scale_estimation") if weights.get(m)))
        extra = details.model_extra or {}
        if extra.get("verified_prompts"):
            text += f"; stateful KV cache, greedy tokens = transformers' on {extra['verified_prompts']} prompts"
        if details.fake_quantize_nodes:
            text += f"; {details.fake_quantize_nodes} FakeQuantize"
        if details.bf16_native is False:
            text += "; bf16 EMULATED (no native bf16 on this CPU)"
        control = details.accuracy_control
        if control:
            kept = control["kept_float_compute_ops"]
            text += (f"; accuracy control ({control['budget']}): {len(kept)} compute op(s) kept float"
                     + (f" ({', '.join(kept[:3])}{'...' if len(kept) > 3 else ''})" if kept else ""))
        return text


def _config(config: BaseModel) -> CompileConfig:
    """The step's own Config (``Step`` methods take any; the engine validated this one against ``Config``)."""
    if not isinstance(config, CompileConfig):
        raise TypeError(f"compile was given a {type(config).__name__}, not a CompileConfig")
    return config


def _target(config: CompileConfig) -> "CompileTarget":
    """The backend's build of ``config.target``."""
    from optkit.backends import backend

    return backend(TARGETS[config.target][0]).compile_targets[config.target]


def _request(ctx: StepContext, artifact: Artifact, config: CompileConfig, out: Path) -> "CompileRequest":
    """The backend's plain inputs: the options, and the run's data as calibration, example and timing callables."""
    from optkit.backends.compiling import CompileOptions, CompileRequest
    from optkit.backends.onnxruntime import ORT_SESSIONS

    options = CompileOptions(
        ort_session=None if config.ort_session == "tune" else ORT_SESSIONS[config.ort_session],
        compress_to_fp16=config.compress_to_fp16, transformer=_has_attention(artifact, config),
        nncf_preset=config.nncf_preset, fast_bias_correction=config.fast_bias_correction,
        accuracy_control_asked=bool(config.accuracy_control), calib_data_given=bool(config.calib_data),
        shapes=config.shapes, workspace_gb=config.workspace_gb, layout=config.layout, fixed_batch=config.fixed_batch)

    def time_candidates(candidates: list[Artifact]) -> list[float]:
        from optkit.eval.measure import quick_p50s

        return quick_p50s(candidates, ctx.data, ctx.settings)  # timed side by side

    return CompileRequest(source=artifact, out=out, precision=config.precision, options=options, ui=ctx.ui,
                          threads=ctx.settings.threads, calibration=lambda per: _calibration(ctx, artifact, config, per),
                          example=ctx.data.batch, time_candidates=time_candidates)


def _has_attention(artifact: Artifact, config: CompileConfig) -> bool:
    """OpenVINO int8 from fp32 quantizes a model with attention by NNCF's transformer scheme."""
    if config.target != "openvino-cpu":
        return False
    from optkit.backends.onnx_io import load_model
    from optkit.steps._transformer import has_attention

    return bool(has_attention(load_model(artifact.path)))


def _calibration(ctx: StepContext, artifact: Artifact, config: CompileConfig, per: int) -> "Calibration":
    """Whole batches of ``per`` samples of the calibration split (at most --calib-samples, at least one batch), with
    NNCF accuracy control on them when OpenVINO int8 asks for it."""
    from optkit.backends.compiling import Calibration
    from optkit.eval.calibration import calibration_data

    calib, source = calibration_data(ctx, artifact, config.calib_data)
    feeds = [calib.batch(per, i * per) for i in range(max(1, min(config.calib_samples, len(calib)) // per))]
    control = None
    if config.target == "openvino-cpu" and config.accuracy_control:
        control = _accuracy_control(ctx, artifact, calib, len(feeds), config.max_drop)
    return Calibration(feeds, source, control)


def _accuracy_control(ctx: StepContext, artifact: Artifact, calib: "EvalData", n: int,
                      max_drop: float) -> "AccuracyControl":
    """NNCF accuracy control on the run's task metric (cosine to the fp32 outputs without one), scored on the first
    ``n`` calibration samples against the fp32 model's outputs on them."""
    import numpy as np

    from optkit.backends.compiling import AccuracyControl
    from optkit.eval.data import EvalData
    from optkit.eval.measure import outputs_on_data
    from optkit.eval.task_metric import resolve_metric

    metric = ctx.settings.metric or resolve_metric("cosine", ctx.base)
    assert metric is not None  # "cosine" is built in
    subset = EvalData(inputs={k: v[:n] for k, v in calib.inputs.items()},
                      labels=calib.labels[:n] if calib.labels is not None else None)
    if metric.needs_labels and subset.labels is None:
        raise UsageError(f"accuracy control (--max-drop) judges {metric.spec} on the calibration data, which has no labels",
                         hint="Add 'labels' to the calibration .npz, or pick a reference metric with --metric "
                              "(cosine, ctc_string_match, mask_iou, ...)")
    reference = outputs_on_data(artifact, subset, ctx.settings)

    def score(indices: list[int], outputs: dict[str, Any]) -> float:
        idx = np.asarray(indices)
        ref = {k: v[idx] for k, v in reference.items()}
        labels = subset.labels[idx] if subset.labels is not None else None
        judged = metric.evaluate(outputs, {k: v[idx] for k, v in subset.inputs.items()}, labels, ref)
        assert judged is not None  # labels and reference outputs are both given
        value = judged.value
        return value if metric.higher_is_better else -value

    unit = f" {metric.unit}" if metric.unit else ""
    name = metric.spec if ":" not in metric.spec else Path(metric.spec.rpartition(":")[0]).name
    return AccuracyControl(max_drop=max_drop / 100 if metric.points else max_drop, score=score,
                           budget=f"{name} drop <= {max_drop:g}{unit}")


def _causal_lm(ctx: StepContext, artifact: Artifact, config: CompileConfig) -> StepResult:
    """openvino-cpu for a text-generation model: the stateful IR (fp32 verified token by token against transformers'
    greedy ``generate`` on the evaluation prompts), or its NNCF int8/int4 weight compression."""
    from optkit.backends.compiling import CompileOptions, CompileRequest
    from optkit.backends.openvino_llm_compile import WeightCompression, compile_causal_lm, prompt_rows
    from optkit.eval.calibration import calibration_data
    from optkit.types.lazy import load_dotted

    assert ctx.companion is not None
    ctx.companion(".bin")
    how = None if config.precision == "fp32" else WeightCompression(
        config.precision, config.group_size, config.ratio, config.symmetric, config.awq, config.scale_estimation)
    prompts = prompt_rows(ctx.data.inputs["input_ids"], ctx.data.inputs.get("attention_mask"), 4, 32)
    samples = None
    if how is not None and how.data_aware:
        calib, _ = calibration_data(ctx, artifact, config.calib_data)
        samples = prompt_rows(calib.inputs["input_ids"], calib.inputs.get("attention_mask"), config.calib_samples, 128)
    request = CompileRequest(source=artifact, out=ctx.out_path, precision=config.precision, options=CompileOptions(),
                             ui=ctx.ui, threads=ctx.settings.threads)
    built = compile_causal_lm(request, load_dotted(CAUSAL_LOADER)(artifact), how, prompts, samples)
    details = CompileDetails.model_validate({**built.facts.to_json(), "target": config.target,
                                             "precision": config.precision})
    return StepResult(artifact=built.artifact, details=details)
