"""simplify: constant folding, shape inference and dead-node removal (onnxslim or onnxsim).

The default engine is onnxslim: on both sample models it removed at least as many nodes as onnxsim
and ran faster (see benchmarks/onnx_chain.py, which measures both). Dynamic dimensions are kept.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from optkit.types.artifact import Artifact
from optkit.types.errors import StepError
from optkit.types.records import Details, Verification
from optkit.steps.base import Step, StepContext, StepResult
from optkit.steps._onnx_common import ExactConfig, finish, op_counts, save_model


class SimplifyConfig(ExactConfig):
    engine: Literal["onnxslim", "onnxsim"] = Field("onnxslim", description="graph simplifier to use")


def simplify_model(model, engine: str):
    from optkit.types.lazy import require

    if engine == "onnxslim":
        onnxslim = require("onnxslim", "simplify --engine onnxslim")
        return onnxslim.slim(model)
    onnxsim = require("onnxsim", "simplify --engine onnxsim")
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise StepError("onnxsim could not validate its simplified model", hint="Try --engine onnxslim")
    return simplified


def attention_lost(model, simplified) -> tuple[int, int] | None:
    """(Attention fused from the input, from the simplified graph) when simplifying costs attention fusion
    (measured: onnxslim and onnxsim both rewrite a BERT export so that none of its attention fuses)."""
    from optkit.steps._transformer import has_attention, optimize_transformer

    if not has_attention(model):
        return None
    before = optimize_transformer(model)[1].get("Attention", 0)
    if before == 0:
        return None
    after = optimize_transformer(simplified)[1].get("Attention", 0) if has_attention(simplified) else 0
    return (before, after) if after < before else None


class SimplifyDetails(Details):
    engine: str
    nodes_before: int
    nodes_after: int
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    verification: Verification
    kept_input: dict[str, int] | None = None  # attention fused from the input and from the simplified graph


class SimplifyStep(Step):
    name = "simplify"
    summary = "constant folding, shape inference, dead-node removal"
    accepts = ("onnx",)
    produces = "onnx"
    suffix = ".onnx"
    Config = SimplifyConfig
    Details = SimplifyDetails

    def run(self, ctx: StepContext, artifact: Artifact, config: SimplifyConfig) -> StepResult:
        from optkit.backends import onnx_io
        from optkit.types.ui import quiet_libraries

        model = onnx_io.load_model(artifact.path)
        before = op_counts(model)
        with quiet_libraries():
            simplified = simplify_model(model, config.engine)
            lost = attention_lost(model, simplified)
        if lost:  # a smaller graph that no longer fuses its attention is slower where it matters: keep the input
            simplified = model
            ctx.ui.warn(f"simplify: {config.engine}'s graph would no longer fuse its attention in ONNX Runtime "
                        f"({lost[1]} of {lost[0]} Attention blocks): the input is kept as it is")
        save_model(simplified, ctx.out_path)
        out, check = finish(ctx, artifact, config, "simplified",
                            hint=f"Report it, and use the other --engine ({'onnxsim' if config.engine == 'onnxslim' else 'onnxslim'})")
        after = op_counts(simplified)
        details = SimplifyDetails(
            engine=config.engine, nodes_before=sum(before.values()), nodes_after=sum(after.values()),
            ops_before=before, ops_after=after, verification=check,
            kept_input={"attention_fused_before": lost[0], "attention_fused_after": lost[1]} if lost else None)
        return StepResult(artifact=out, details=details)

    @staticmethod
    def describe(details: SimplifyDetails) -> str:
        kept = details.kept_input
        if kept:
            return (f"{details.engine}: input kept ({details.nodes_before} nodes): simplified, its attention would fuse "
                    f"{kept['attention_fused_after']} of {kept['attention_fused_before']} blocks instead of all")
        return f"{details.engine}: nodes {details.nodes_before} -> {details.nodes_after}"
