"""profile: measure one artifact (accuracy, latency per batch size, size, peak memory)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from optkit.types.artifact import Artifact
from optkit.types.ledger import Profile
from optkit.steps.base import Step, StepContext, StepResult


class ProfileConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    batch_sizes: list[int] | None = Field(None, min_length=1, description="batch sizes to time (default: the run's)")


class ProfileStep(Step):
    name = "profile"
    summary = "measure accuracy, latency, size and memory of an artifact"
    accepts = ("torch", "onnx", "openvino", "tensorrt", "tflite")
    produces = None
    Config = ProfileConfig

    def run(self, ctx: StepContext, artifact: Artifact, config: ProfileConfig) -> StepResult:
        from optkit.eval.measure import measure

        sizes = tuple(config.batch_sizes or ctx.settings.batch_sizes)
        m = measure(artifact, ctx.data, ctx.settings, batch_sizes=sizes)
        profile = Profile(artifact=str(artifact.path), format=artifact.format, size_bytes=artifact.size_bytes(),
                          sha256=artifact.digest(), eval_data=ctx.data.reference(), accuracy=m.accuracy,
                          latency=m.latency, peak_memory_mb=m.peak_memory_mb, notes=m.notes)
        return StepResult(profile=profile, outputs=m.outputs)
