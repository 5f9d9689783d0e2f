"""ONNX Runtime backend (CPU execution provider)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Runner
from optkit.types.artifact import Artifact, checked_runtime
from optkit.types.errors import UsageError
from optkit.types.lazy import require


LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


def session_options(threads: int, tuned: dict[str, Any] | None = None, **overrides: Any):
    """Session options: optkit's defaults, then a compiled artifact's tuned settings, then overrides.

    ``tuned`` (from a sidecar) holds only the settings compile records - graph_optimization_level
    (disabled|basic|extended|all), enable_mem_pattern, enable_cpu_mem_arena, allow_spinning - with their
    types (``types.artifact.OrtSessionSettings``); anything else is a UsageError naming the key, never a
    setattr (optimized_model_filepath would write a file anywhere). ``overrides`` are optkit's own code's.
    """
    from optkit.types.artifact import OrtSessionSettings, validation_text
    from pydantic import ValidationError

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

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {n: feed[n] for n in self.input_names})
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        self.session = None


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
