"""compile: an ONNX model -> the artifact a given runtime deploys.

ort-cpu       the graph-optimized ONNX model plus the session settings that measured fastest on
              this machine (a small grid: optimization level, memory pattern, thread spinning; the
              default settings are a candidate, so the result is never slower than its input).
openvino-cpu  OpenVINO IR with an explicit precision: fp32 (f32 hint), bf16, or int8 (a QDQ input
              converts directly; an fp32 input is quantized by NNCF with the calibration split).
tensorrt      a serialized TensorRT engine (fp32/fp16/int8 from QDQ), one optimization profile.
ort-cuda      ONNX Runtime with the CUDA execution provider (fp32/fp16).
tflite        a LiteRT (TFLite) flatbuffer converted from the torch model by litert-torch (fp32), then quantized
              by ai-edge-quantizer: fp16 weights, int8-dynamic (int8 weights, activations at run time) or int8
              (full integer, calibrated on the calibration split); run by the LiteRT interpreter with XNNPACK.

fp32 outputs must match the input within atol/rtol; bf16/fp16/int8 are judged on accuracy like
quantize (``max_drop`` points of top-1 vs the input, or ``min_cosine`` without labels).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from optkit.types import onnx_io
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.records import Check, Details, Verification
from optkit.steps.base import BudgetSearchConfig, Step, StepContext, StepResult

TARGETS = {  # target -> (output format, suffix, precisions)
    "ort-cpu": ("onnx", ".onnx", ("fp32",)),
    "openvino-cpu": ("openvino", ".xml", ("fp32", "bf16", "int8")),
    "tensorrt": ("tensorrt", ".engine", ("fp32", "fp16", "int8")),
    "ort-cuda": ("onnx", ".onnx", ("fp32", "fp16")),
    "tflite": ("tflite", ".tflite", ("fp32", "fp16", "int8-dynamic", "int8")),
}
ORT_SESSIONS = {  # the first is ONNX Runtime's default behaviour
    "default": {"graph_optimization_level": "all"},
    "extended": {"graph_optimization_level": "extended"},
    "no-mem-pattern": {"graph_optimization_level": "all", "enable_mem_pattern": False},
    "no-spinning": {"graph_optimization_level": "all", "allow_spinning": False},
}
ORT_GRID = list(ORT_SESSIONS.values())


def ort_session_name(settings: dict[str, Any]) -> str | None:
    """The name of recorded session settings (a record's ``chosen``), to pin them in a recipe."""
    return next((name for name, value in ORT_SESSIONS.items() if value == settings), None)


class CompileConfig(BudgetSearchConfig):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    target: Literal["ort-cpu", "openvino-cpu", "tensorrt", "ort-cuda", "tflite"] = Field(
        description="deployment runtime (tensorrt and ort-cuda need a GPU; tflite takes the torch model)")
    precision: Literal["fp32", "fp16", "bf16", "int8", "int8-dynamic"] = Field(
        "fp32", description="compute precision (what the target supports; int8-dynamic: tflite)")
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
    max_drop: float = Field(1.0, ge=0, description="low precision: largest drop of the task metric (--metric; default "
                            "top-1; points for fractions) vs the input model")
    accuracy_control: bool | None = Field(None, description="openvino int8 from fp32: NNCF quantization with accuracy "
                                          "control, keeping the task metric (cosine without one) within --max-drop on "
                                          "the calibration samples; default: on when --max-drop is given")
    min_cosine: float | None = Field(None, ge=-1, le=1, description="low precision: minimum mean cosine to the input's "
                                     "outputs (default: 0.99 when no task metric judges, else not checked)")

    SEARCH: ClassVar[str] = "accuracy_control"

    def search_applies(self) -> bool:  # NNCF's accuracy control: OpenVINO int8 only
        return self.target == "openvino-cpu" and self.precision == "int8"

    @property
    def accuracy_budget(self) -> float:
        """Task-metric points (raw units) a low-precision result may lose vs the input."""
        return self.max_drop


def int8_kind(path: Path) -> str | None:
    """How an ONNX model is already quantized: 'QDQ' (static), 'dynamic' (integer ops), or None (float)."""
    ops = {n.op_type for n in onnx_io.load_model(path, external_data=False).graph.node}
    if "QuantizeLinear" in ops:
        return "QDQ"
    if ops & {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul"}:
        return "dynamic"
    return None


def is_qdq(path: Path) -> bool:
    return int8_kind(path) == "QDQ"


class CompileDetails(Details):
    """What was built for which target; the backend's own facts (OpenVINO/NNCF, TensorRT builder) beside them."""

    target: str
    precision: str  # what runs: "int8 (QDQ input)" when an int8 model is compiled at fp32
    check: Check | Verification | None = None  # accuracy check (lossy precisions) or exact comparison
    tuning: list[dict[str, Any]] | None = None  # ort-cpu: every session setting tried, with its p50
    chosen: dict[str, Any] | None = None
    hardware_specific: bool | None = None
    int8_source: str | None = None
    bf16_native: bool | None = None
    compress_to_fp16: bool | None = None
    nncf: dict[str, Any] | None = None
    accuracy_control: dict[str, Any] | None = None
    fake_quantize_nodes: int | None = None
    tflite: dict[str, Any] | None = None  # converter, layout, batch, quantization recipe, ops and I/O dtypes


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
    def input_formats(cls, config: CompileConfig) -> tuple[str, ...]:
        return ("torch",) if config.target == "tflite" else cls.accepts

    @classmethod
    def output_format(cls, config: CompileConfig) -> tuple[str, str]:
        fmt, suffix, _ = TARGETS[config.target]
        return fmt, suffix

    def precheck(self, config: CompileConfig, source: Artifact, base: Path) -> None:
        """The precision and the runtime are checked before any step of the chain runs."""
        _, _, precisions = TARGETS[config.target]
        if config.precision not in precisions:
            raise UsageError(f"--target {config.target} does not take --precision {config.precision}",
                             hint=f"Use one of: {', '.join(precisions)}"
                                  + (" (int8 for ONNX Runtime: run 'optkit quantize' first)" if config.target == "ort-cpu" else ""))
        if config.target == "openvino-cpu":
            from optkit.types.lazy import require

            require("openvino", "--target openvino-cpu")
        elif config.target == "tensorrt":
            from optkit.backends.tensorrt import require_tensorrt

            require_tensorrt()
        elif config.target == "ort-cuda":
            _require_ort_cuda()
        elif config.target == "tflite":
            from optkit.backends.litert import require_litert

            require_litert("--target tflite", converter=True)

    def run(self, ctx: StepContext, artifact: Artifact, config: CompileConfig) -> StepResult:
        self.precheck(config, artifact, ctx.base)
        build = {"ort-cpu": self._ort_cpu, "openvino-cpu": self._openvino, "tensorrt": self._tensorrt,
                 "ort-cuda": self._ort_cuda, "tflite": self._tflite}[config.target]
        if config.precision != "int8" and config.calib_data:
            ctx.ui.warn(f"--calib-data is ignored: only --precision int8 calibrates (this is {config.precision})")
        out, details = build(ctx, artifact, config)
        # the label says what runs: an int8 model compiled at the default "fp32" still runs its int8 kernels
        already = int8_kind(artifact.path) if artifact.format == "onnx" else None
        precision = f"int8 ({already} input)" if already and config.precision == "fp32" else config.precision
        details = CompileDetails.model_validate({**details, "target": config.target, "precision": precision})
        details.check = self._check(ctx, artifact, out, config)
        return StepResult(artifact=out, details=details)

    # ------------------------------------------------------------------ targets

    def _ort_cpu(self, ctx: StepContext, artifact: Artifact, config: CompileConfig) -> tuple[Artifact, dict]:
        from optkit.eval.measure import quick_p50s
        from optkit.backends.onnxruntime import ort_offline

        if config.ort_session != "tune":
            trials, best = None, {"session": ORT_SESSIONS[config.ort_session]}
        else:
            candidates = [Artifact(path=artifact.path, format="onnx", inputs=artifact.inputs, outputs=artifact.outputs,
                                   runtime={"session": settings}) for settings in ORT_GRID]
            p50s = quick_p50s(candidates, ctx.data, ctx.settings)  # timed side by side
            trials = [{"session": settings, "p50_ms": p50} for settings, p50 in zip(ORT_GRID, p50s)]
            best = min(trials, key=lambda t: t["p50_ms"])
        ort_offline(artifact.path, ctx.out_tmp, best["session"]["graph_optimization_level"], ctx.settings.threads)
        out = onnx_io.produced_artifact(ctx.out_tmp, "compile", artifact.task).with_(
            runtime={"session": best["session"], "providers": ["CPUExecutionProvider"]})
        return out, {"tuning": trials, "chosen": best["session"],
                     "hardware_specific": best["session"]["graph_optimization_level"] == "all"}

    def _openvino(self, ctx: StepContext, artifact: Artifact, config: CompileConfig) -> tuple[Artifact, dict]:
        from optkit.backends.openvino import PRECISION_HINT, convert, read_io_specs

        quantize_with, source, control = None, "fp32 model", None
        if config.precision == "int8":
            if is_qdq(artifact.path):
                source = "QDQ model (quantized by optkit quantize)"
                for flag, value in (("--calib-data", config.calib_data), ("accuracy control", config.accuracy_control)):
                    if value:
                        ctx.ui.warn(f"{flag} is ignored: the input is already quantized (QDQ), so nothing is calibrated")
            else:
                from optkit.eval.calibration import calibration_data

                calib, source = calibration_data(ctx, artifact, config.calib_data)
                from optkit.eval.measure import static_batch

                per = static_batch(artifact) or 1  # a fixed batch dimension is fed whole batches
                feeds = [calib.batch(per, i * per) for i in range(max(1, min(config.calib_samples, len(calib)) // per))]
                quantize_with = (feeds, len(feeds))
                if config.accuracy_control:
                    control = self._accuracy_control(ctx, artifact, calib, feeds, config.max_drop)
                source = (f"NNCF {'quantization with accuracy control' if control else 'post-training quantization'} "
                          f"on {len(feeds)} samples of {source}")
        bin_tmp = ctx.companion(".bin")
        from optkit.steps._transformer import has_attention

        from optkit.types.ui import quiet_libraries

        with quiet_libraries(), ctx.ui.status(f"OpenVINO: converting{' and quantizing (NNCF)' if quantize_with else ''}"):
            details = convert(artifact.path, ctx.out_tmp, compress_to_fp16=config.compress_to_fp16,
                              quantize_with=quantize_with, transformer=has_attention(onnx_io.load_model(artifact.path)),
                              accuracy_control=control, preset=config.nncf_preset,
                              fast_bias_correction=config.fast_bias_correction)
        assert bin_tmp.is_file(), "OpenVINO wrote its weights under another name"
        inputs, outputs = read_io_specs(ctx.out_tmp)
        out = Artifact(path=ctx.out_tmp, format="openvino", task=artifact.task, inputs=inputs, outputs=outputs,
                       runtime={"inference_precision": PRECISION_HINT[config.precision], "device": "CPU"})
        details["int8_source"] = source if config.precision == "int8" else None
        if config.precision == "bf16":
            from optkit.backends.openvino import cpu_capabilities

            caps = cpu_capabilities()
            details["bf16_native"] = "BF16" in caps
            if not details["bf16_native"]:
                ctx.ui.warn(f"this CPU has no native bf16 (OpenVINO CPU capabilities: {', '.join(caps)}): bf16 runs "
                            "emulated, measured 4-18x slower than fp32 on such a CPU; use --precision fp32 or int8")
        return out, details

    def _tensorrt(self, ctx: StepContext, artifact: Artifact, config: CompileConfig) -> tuple[Artifact, dict]:
        from optkit.backends.tensorrt import build_engine, profile_shapes
        if config.precision == "int8" and not is_qdq(artifact.path):
            raise UsageError("TensorRT int8 needs an explicitly quantized (QDQ) model",
                             hint="Run 'optkit quantize --mode static' first, then compile the QDQ model")
        profiles = profile_shapes(artifact.inputs, config.shapes)
        details = build_engine(artifact.path, ctx.out_tmp, precision=config.precision, profiles=profiles,
                               workspace_gb=config.workspace_gb)
        out = Artifact(path=ctx.out_tmp, format="tensorrt", task=artifact.task, inputs=artifact.inputs,
                       outputs=artifact.outputs, runtime={"device": "cuda"})
        return out, details

    def _ort_cuda(self, ctx: StepContext, artifact: Artifact, config: CompileConfig) -> tuple[Artifact, dict]:
        import onnx

        model = onnx.load(str(artifact.path))
        if config.precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16
            from onnxruntime.transformers.onnx_model import OnnxModel

            model = convert_float_to_float16(model, keep_io_types=True)
            OnnxModel(model).topological_sort()
        onnx.save_model(model, str(ctx.out_tmp))
        out = onnx_io.produced_artifact(ctx.out_tmp, "compile", artifact.task).with_(
            runtime={"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})
        return out, {}

    def _tflite(self, ctx: StepContext, artifact: Artifact, config: CompileConfig) -> tuple[Artifact, dict]:
        import torch

        from optkit.backends import litert
        from optkit.backends.torch import load_module
        from optkit.types.files import scratch_dir

        module = load_module(artifact)
        names = [i.name for i in artifact.inputs]
        dynamic = artifact.inputs[0].dynamic_batch if artifact.inputs else True
        example = ctx.data.batch(2 if dynamic else int(artifact.inputs[0].shape[0]))
        args = tuple(torch.from_numpy(example[n]) for n in names)
        channels_last = config.layout == "nhwc"
        with scratch_dir() as scratch:  # the float .tflite that quantization starts from
            float_path = ctx.out_tmp if config.precision == "fp32" else scratch / "float.tflite"
            with ctx.ui.status("LiteRT: converting with litert-torch"):
                details = litert.convert_torch(module, args, float_path, dynamic_batch=dynamic,
                                               channels_last=channels_last, fixed_batch=config.fixed_batch)
            if details.get("dynamic_batch_failed"):
                ctx.ui.warn(f"litert-torch could not convert a dynamic batch ({details['dynamic_batch_failed'][:120]}); "
                            f"the .tflite takes batch {details['batch']} only (--fixed-batch N for another size)")
            if config.precision != "fp32":
                calib = None
                if config.precision == "int8":
                    calib = self._tflite_calibration(ctx, artifact, config, details, channels_last)
                with ctx.ui.status(f"LiteRT: quantizing ({config.precision}) with ai-edge-quantizer"):
                    details.update(litert.quantize(float_path, ctx.out_tmp, config.precision, calib))
        batch = details["batch"]
        inputs, outputs = artifact.inputs, artifact.outputs
        if isinstance(batch, int):
            inputs, outputs = [s.at_batch(batch) for s in inputs], [s.at_batch(batch) for s in outputs]
        summary = litert.model_summary(ctx.out_tmp)
        details.update({"tflite_ops": summary["ops"], "tflite_io_dtypes": {"inputs": summary["input_dtypes"],
                                                                           "outputs": summary["output_dtypes"]}})
        out = Artifact(path=ctx.out_tmp, format="tflite", task=artifact.task, inputs=inputs, outputs=outputs,
                       runtime={"layout": config.layout, "delegate": "xnnpack"})
        return out, {"tflite": details}

    @staticmethod
    def _tflite_calibration(ctx: StepContext, artifact: Artifact, config: CompileConfig, details: dict,
                            channels_last: bool) -> list[dict]:
        """Calibration feeds keyed by the .tflite signature's input names (args_0, ...), whole batches of 8 (or
        the fixed batch), NHWC where the model takes it."""
        from optkit.eval.calibration import calibration_data

        calib, source = calibration_data(ctx, artifact, config.calib_data)
        per = details["batch"] if isinstance(details["batch"], int) else 8
        count = max(1, min(config.calib_samples, len(calib)) // per)
        feeds = []
        for i in range(count):
            batch = calib.batch(per, i * per)
            feed = {}
            for k, spec in enumerate(artifact.inputs):
                value = batch[spec.name]
                feed[f"args_{k}"] = value.transpose(0, 2, 3, 1).copy() if channels_last and value.ndim == 4 else value
            feeds.append(feed)
        details["calibration"] = f"{count * per} samples of {source}"
        return feeds

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _accuracy_control(ctx: StepContext, artifact: Artifact, calib, feeds: list, max_drop: float) -> tuple:
        """NNCF accuracy control on the run's task metric (cosine to the fp32 outputs without one), scored
        on the calibration samples against the fp32 model's outputs on them."""
        import numpy as np

        from optkit.eval.data import EvalData
        from optkit.eval.measure import outputs_on_data
        from optkit.eval.task_metric import resolve_metric

        metric = ctx.settings.metric or resolve_metric("cosine", ctx.base)
        n = len(feeds)
        subset = EvalData(inputs={k: v[:n] for k, v in calib.inputs.items()},
                          labels=calib.labels[:n] if calib.labels is not None else None)
        if metric.needs_labels and subset.labels is None:
            raise UsageError(f"accuracy control (--max-drop) judges {metric.spec} on the calibration data, which has no labels",
                             hint="Add 'labels' to the calibration .npz, or pick a reference metric with --metric "
                                  "(cosine, ctc_string_match, mask_iou, ...)")
        reference = outputs_on_data(artifact, subset, ctx.settings)

        def score(indices: list[int], outputs: dict) -> float:
            idx = np.asarray(indices)
            ref = {k: v[idx] for k, v in reference.items()}
            labels = subset.labels[idx] if subset.labels is not None else None
            value = metric.evaluate(outputs, {k: v[idx] for k, v in subset.inputs.items()}, labels, ref).value
            return value if metric.higher_is_better else -value

        unit = f" {metric.unit}" if metric.unit else ""
        name = metric.spec if ":" not in metric.spec else Path(metric.spec.rpartition(":")[0]).name
        return feeds, max_drop / 100 if metric.points else max_drop, score, f"{name} drop <= {max_drop:g}{unit}"

    @staticmethod
    def _check(ctx: StepContext, parent: Artifact, out: Artifact, config: CompileConfig) -> Check | Verification:
        from optkit.eval.compare import accuracy_check, tolerance_error, verify_outputs
        from optkit.eval.measure import outputs_on_data

        lossy = config.precision != "fp32" or (config.target == "openvino-cpu" and is_qdq(parent.path))
        if not lossy:
            return verify_outputs(parent, out, ctx.data, atol=config.atol, rtol=config.rtol, batch_sizes=[1, 8],
                                  threads=ctx.settings.threads, what=f"compiled ({config.target})",
                                  hint="Report it; loosen --atol/--rtol only if this drift is acceptable")
        check = accuracy_check(ctx.parent_outputs(), outputs_on_data(out, ctx.data, ctx.settings), ctx.data,
                               ctx.settings.metric, config.accuracy_budget, config.min_cosine)
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


def _require_ort_cuda() -> None:
    import onnxruntime as ort

    from optkit.backends.tensorrt import nvidia_gpu_present

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        gpu = "an NVIDIA GPU is present" if nvidia_gpu_present() else "and no NVIDIA GPU was found either"
        raise UsageError(f"--target ort-cuda needs onnxruntime-gpu, which is not installed ({gpu})",
                         hint="On a machine with an NVIDIA GPU: pip install 'optkit[tensorrt]' (brings onnxruntime-gpu)")
    if not nvidia_gpu_present():
        raise UsageError("--target ort-cuda needs an NVIDIA GPU and none was found", hint="Run it on a GPU machine")
