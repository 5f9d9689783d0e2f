"""Pieces shared by the ONNX -> ONNX steps: saving, op statistics, the numeric check, tolerances."""
from __future__ import annotations

import collections
import contextlib
import os
from pathlib import Path
from typing import Iterator

from pydantic import BaseModel, ConfigDict, Field

from optkit.core.artifact import Artifact
from optkit.core.step import StepContext


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


def finish(ctx: StepContext, parent: Artifact, config: ExactConfig, what: str, hint: str) -> tuple[Artifact, dict]:
    """Check the written file, read its specs, and compare it with its parent on evaluation data."""
    from optkit.core import onnx_io
    from optkit.eval.compare import verify_outputs

    out = onnx_io.produced_artifact(ctx.out_tmp, what, parent.task)
    check = verify_outputs(parent, out, ctx.data, atol=config.atol, rtol=config.rtol, batch_sizes=[1, 8],
                           threads=ctx.settings.threads, what=what, hint=hint)
    return out, check


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary working directory: tools that drop files in the current directory drop them there.
    Inside the run's output folder when the engine set one (``files.scratch_root``), so a killed run's
    scratch is found and removed by the next run."""
    from optkit.core.files import scratch_folder

    old = os.getcwd()
    with scratch_folder() as tmp:
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(old)
