"""Which data a calibrating step calibrates on: the one rule quantize (ORT and neural-compressor) and compile
(OpenVINO, TensorRT, LiteRT int8) share, so a model calibrates on the same split whichever step does it."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from optkit.types.errors import UsageError

if TYPE_CHECKING:
    from optkit.eval.data import EvalData
    from optkit.types.artifact import Artifact
    from optkit.types.ui import UI


class CalibrationContext(Protocol):
    """What calibration needs of a step's context (``steps.base.StepContext`` is one; eval cannot name it)."""

    @property
    def ui(self) -> UI: ...

    @property
    def data(self) -> EvalData: ...

    @property
    def base(self) -> Path: ...


def calibration_data(ctx: CalibrationContext, artifact: Artifact, calib_data: str | None = None,
                     calib_from_eval: bool = False) -> tuple[EvalData, str]:
    """The split to calibrate on and how to name it: ``calib_data`` (relative to the recipe), else the model's
    calibration split, else - only when asked - the evaluation split (said so: figures are optimistic)."""
    from optkit.eval.data import load_npz

    if calib_data:
        path = ctx.base / calib_data  # an absolute calib_data stays as it is
        return load_npz(path, artifact.inputs), f"calib data {path.name}"
    if artifact.calib_data:
        return load_npz(artifact.calib_data, artifact.inputs), "the model's calibration split"
    if calib_from_eval and not ctx.data.synthetic:
        ctx.ui.warn("calibrating on the EVALUATION split (asked with calib_from_eval): accuracy figures are optimistic")
        return ctx.data, "the EVALUATION split (no calibration data; accuracy is optimistic)"
    raise UsageError(f"static quantization needs calibration data, and {artifact.path.name} records no calibration split",
                     hint="Pass --calib-data FILE.npz (arrays named after the model inputs), or --calib-from-eval "
                          "to calibrate on the evaluation split (optimistic accuracy), or use --mode dynamic")
