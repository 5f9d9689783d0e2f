"""Pieces shared by the ONNX -> ONNX steps: saving, op statistics, the numeric check, tolerances."""
from __future__ import annotations

import collections
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from optkit.types.artifact import Artifact
from optkit.steps.base import StepContext
from optkit.types.records import Verification


class ExactConfig(BaseModel):
    """Options of a transform that must not change outputs beyond float rounding."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    atol: float = Field(1e-4, ge=0, description="absolute tolerance of the output-vs-input check")
    rtol: float = Field(1e-3, ge=0, description="relative tolerance of the output-vs-input check")


def opset_of(model) -> int:
    """The model's default-domain (ai.onnx) opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def op_counts(model) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def save_model(model, path: Path) -> None:
    """One self-contained file (no external data) for models under 2 GB."""
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=False)


def finish(ctx: StepContext, parent: Artifact, config: ExactConfig, what: str, hint: str) -> tuple[Artifact, Verification]:
    """Check the written file, read its specs, and compare it with its parent on evaluation data."""
    from optkit.backends import onnx_io
    from optkit.eval.compare import verify_outputs

    out = onnx_io.produced_artifact(ctx.out_path, what, parent.task)
    check = verify_outputs(parent, out, ctx.data, atol=config.atol, rtol=config.rtol, batch_sizes=[1, 8],
                           threads=ctx.settings.threads, what=what, hint=hint)
    return out, check
