"""ONNX Runtime backend: the CPU and CUDA execution providers, and the ort-cpu / ort-cuda compile targets.

ort-cpu   the graph-optimized ONNX model plus the session settings that measured fastest on this machine (a small
          grid: optimization level, memory pattern, thread spinning; the default settings are a candidate, so the
          result is never slower than its input), or the pinned ones.
ort-cuda  ONNX Runtime with the CUDA execution provider (fp32, or fp16 with float32 I/O).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Backend, Runner
from optkit.backends.compiling import Compiled, CompileFacts, CompileRequest, CompileTarget
from optkit.backends.onnx_io import KV_INPUT_PREFIX, KV_OUTPUT_PREFIX, looks_like_onnx, open_onnx, produced_artifact
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.lazy import require
from optkit.types.sidecar import checked_runtime

ORT_SESSIONS: dict[str, dict[str, Any]] = {  # compile --ort-session NAME; the first is ONNX Runtime's default
    "default": {"graph_optimization_level": "all"},
    "extended": {"graph_optimization_level": "extended"},
    "no-mem-pattern": {"graph_optimization_level": "all", "enable_mem_pattern": False},
    "no-spinning": {"graph_optimization_level": "all", "allow_spinning": False},
}
LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def session_options(threads: int, tuned: dict[str, Any] | None = None, **overrides: Any):
    """Session options: optkit's defaults, then a compiled artifact's tuned settings, then overrides.

    ``tuned`` (from a sidecar) holds only the settings compile records - graph_optimization_level
    (disabled|basic|extended|all), enable_mem_pattern, enable_cpu_mem_arena, allow_spinning - with their
    types (``types.sidecar.OrtSessionSettings``); anything else is a UsageError naming the key, never a
    setattr (optimized_model_filepath would write a file anywhere). ``overrides`` are optkit's own code's.
    """
    from pydantic import ValidationError

    from optkit.types.sidecar import OrtSessionSettings, validation_text

    ort = require("onnxruntime", "running ONNX models")
    try:
        settings = OrtSessionSettings.model_validate(tuned or {})
    except ValidationError as exc:
        raise UsageError(f"ONNX Runtime session setting refused: {validation_text(exc, ('runtime', 'session'))}",
                         hint="Re-create the artifact with 'optkit compile --target ort-cpu'") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(threads, 0)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: warnings would interleave with optkit's output
    if settings.graph_optimization_level is not None:
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[settings.graph_optimization_level])
    if settings.enable_mem_pattern is not None:
        so.enable_mem_pattern = settings.enable_mem_pattern
    if settings.enable_cpu_mem_arena is not None:
        so.enable_cpu_mem_arena = settings.enable_cpu_mem_arena
    if settings.allow_spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0")
    for key, value in overrides.items():
        setattr(so, key, value)
    return so


class OrtRunner(Runner):
    format = "onnx"

    @classmethod
    def preload(cls) -> None:
        require("onnxruntime", "running ONNX models")

    def __init__(self, artifact: Artifact, threads: int = 1, providers: list[str] | None = None) -> None:
        ort = require("onnxruntime", "running ONNX models")
        try:
            self.session = ort.InferenceSession(
                str(artifact.path), sess_options=session_options(threads, artifact.runtime.get("session")),
                providers=providers or checked_runtime(artifact.runtime).get("providers") or ["CPUExecutionProvider"])
        except UsageError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if "onnxruntime_src" in first:  # keep the reason, drop ORT's source location prefix
                first = first.rsplit(") ", 1)[-1]
            first = first[:240]
            raise UsageError(f"ONNX Runtime cannot load {artifact.path}: {first}",
                             hint="Check the file with 'python -m onnx.checker' or re-export it") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        # a causal LM exported with its KV cache: as a fixed-shape model it is its prefill (an empty past,
        # positions from the mask) and its logits, what the torch model it came from returns for the same tokens
        self._empty_past = {i.name: i for i in self.session.get_inputs() if i.name.startswith(KV_INPUT_PREFIX)}
        if self._empty_past:
            self.output_names = [n for n in self.output_names if not n.startswith(KV_OUTPUT_PREFIX)]

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._empty_past:
            feed = prefill_feed(feed, self._empty_past, "position_ids" in self.input_names)
        outs = self.session.run(self.output_names, {n: feed[n] for n in self.input_names})
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None


def prefill_feed(feed: dict[str, np.ndarray], pasts: dict[str, Any], positions: bool) -> dict[str, np.ndarray]:
    """``feed`` (token ids and mask) completed for a KV-cache graph's first call: every past empty (length 0, its
    heads and head size from the graph) and ``position_ids`` counted along the mask (right padding stays put)."""
    batch = feed["input_ids"].shape[0]
    full = dict(feed)
    for name, spec in pasts.items():
        if name not in full:
            dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
            full[name] = np.zeros((batch, spec.shape[1], 0, spec.shape[3]), dtype=dtype)
    if positions and "position_ids" not in full:
        mask = full.get("attention_mask", np.ones_like(feed["input_ids"]))
        full["position_ids"] = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int64)
    return full


def preprocess_for_quantization(src: Path, dst: Path, details: dict) -> Path:
    """ONNX Runtime's quantization pre-processing (symbolic shape inference with auto-merge, which transformers
    need, and graph optimization) into ``dst``; the input itself when it fails (quantization works without it)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), auto_merge=True)
        details["preprocess"] = "symbolic shape inference (auto_merge) + optimization"
        return dst
    except Exception as exc:  # pre-processing is an optimisation; quantization works without it
        details["preprocess"] = f"skipped: {type(exc).__name__}: {str(exc)[:160]}"
        return src


def ort_offline(src: Path, dst: Path, level: str, threads: int) -> None:
    """ONNX Runtime's offline graph optimization at ``level`` (basic | extended | all), written to ``dst``."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so = session_options(threads, graph_optimization_level=levels[level], optimized_model_filepath=str(dst))
    ort.InferenceSession(str(src), sess_options=so, providers=["CPUExecutionProvider"])


def ort_session_name(settings: dict[str, Any]) -> str | None:
    """The name of recorded session settings (a record's ``chosen``), to pin them in a recipe."""
    return next((name for name, value in ORT_SESSIONS.items() if value == settings), None)


def compile_cpu(request: CompileRequest) -> Compiled:
    """ort-cpu: the session settings pinned, or each of ``ORT_SESSIONS`` timed side by side and the fastest kept;
    the graph optimized offline at its level."""
    source = request.source
    pinned = request.options.ort_session
    trials: list[dict[str, Any]] | None = None
    if pinned is not None:
        best: dict[str, Any] = {"session": pinned}
    else:
        if request.time_candidates is None:
            raise ValueError("tuning ort-cpu session settings needs a way to time them (time_candidates)")
        grid = list(ORT_SESSIONS.values())
        candidates = [Artifact(path=source.path, format="onnx", inputs=source.inputs, outputs=source.outputs,
                               runtime={"session": settings}) for settings in grid]
        p50s = request.time_candidates(candidates)
        trials = [{"session": settings, "p50_ms": p50} for settings, p50 in zip(grid, p50s)]
        best = min(trials, key=lambda t: t["p50_ms"])
    ort_offline(source.path, request.out, best["session"]["graph_optimization_level"], request.threads)
    out = produced_artifact(request.out, "compile", source.task).with_(
        runtime={"session": best["session"], "providers": ["CPUExecutionProvider"]})
    return Compiled(out, CompileFacts(tuning=trials, chosen=best["session"],
                                      hardware_specific=best["session"]["graph_optimization_level"] == "all"))


def compile_cuda(request: CompileRequest) -> Compiled:
    """ort-cuda: the model as it is (fp32), or converted to fp16 with float32 inputs and outputs."""
    import onnx

    model = onnx.load(str(request.source.path))
    if request.precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = convert_float_to_float16(model, keep_io_types=True)
        OnnxModel(model).topological_sort()
    onnx.save_model(model, str(request.out))
    out = produced_artifact(request.out, "compile", request.source.task).with_(
        runtime={"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})
    return Compiled(out)


def require_cuda() -> None:
    """onnxruntime-gpu with the CUDA provider, and an NVIDIA GPU, or a one-line error naming what is missing."""
    import onnxruntime as ort

    from optkit.backends.tensorrt import nvidia_gpu_present

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        gpu = "an NVIDIA GPU is present" if nvidia_gpu_present() else "and no NVIDIA GPU was found either"
        raise UsageError(f"--target ort-cuda needs onnxruntime-gpu, which is not installed ({gpu})",
                         hint="On a machine with an NVIDIA GPU: pip install 'optkit[tensorrt]' (brings onnxruntime-gpu)")
    if not nvidia_gpu_present():
        raise UsageError("--target ort-cuda needs an NVIDIA GPU and none was found", hint="Run it on a GPU machine")


BACKEND = Backend(format="onnx", runner=OrtRunner, recognises=looks_like_onnx, open=open_onnx,
                  compile_targets={"ort-cpu": CompileTarget(compile_cpu, require=lambda: None),
                                   "ort-cuda": CompileTarget(compile_cuda, require=require_cuda)})
