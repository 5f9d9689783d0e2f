"""fuse: operator fusion, in three passes, each counted.

1. Transformer fusions from ONNX Runtime's transformer optimizer (Attention, SkipLayerNormalization,
   LayerNormalization, BiasGelu/Gelu...), when the graph has attention (Softmax + MatMul); the model
   type, heads and hidden size are detected from the graph or given.
2. ONNX Runtime's offline graph optimizations at ``--level``: ``basic`` (constant folding,
   Conv+BatchNorm and other portable fusions; the file stays standard ONNX), ``extended``
   (ORT-specific fused ops such as FusedConv/FusedGemm: runs only in ONNX Runtime) or ``all``
   (adds layout transforms tuned to this CPU's instruction set: hardware-specific, warned).

Conv+BatchNorm folding happens in pass 2 at every level; the sidecar counts BatchNormalization
nodes before and after.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from optkit.types.artifact import Artifact
from optkit.steps.base import Step, StepContext, StepResult
from optkit.types.records import Details, Verification
from optkit.steps._onnx_common import ExactConfig, finish, op_counts, opset_of, save_model
from optkit.steps._transformer import has_attention, optimize_transformer

class FuseConfig(ExactConfig):
    level: Literal["basic", "extended", "all"] = Field(
        "basic", description="ONNX Runtime offline optimization level: basic keeps standard ONNX ops, so a later "
                             "quantize step can still quantize Conv/MatMul; extended adds ORT-only fused ops; "
                             "all is hardware-specific")
    transformer: Literal["auto", "on", "off"] = Field(
        "auto", description="run the transformer optimizer (auto: when the graph has attention)")
    model_type: str = Field("bert", description="onnxruntime.transformers model type (bert, vit, gpt2, ...)")
    num_heads: int = Field(0, ge=0, description="attention heads (0: detect from the graph)")
    hidden_size: int = Field(0, ge=0, description="hidden size (0: detect from the graph)")
    skip_layer_norm: Literal["auto", "fused", "split"] = Field(
        "auto", description="SkipLayerNormalization after attention fusion: keep it (fused), split it back into "
                            "Add + LayerNormalization (split), or time both and keep the faster (auto)")


def split_skip_layernorm(model) -> int:
    """Rewrite each SkipLayerNormalization as Add (+ bias Add) + LayerNormalization, in place.

    The transformer optimizer needs SkipLayerNormalization as the anchor of its attention fusion, but
    on some CPUs the fused kernel is slower than Add + LayerNormalization (measured on digits_vit:
    0.64 ms vs 0.50 ms at batch 1), so fuse can keep the attention fusion and split this one back.
    """
    from onnx import helper

    graph, nodes, count = model.graph, [], 0
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        count += 1
        x, skip, gamma = node.input[0], node.input[1], node.input[2]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        summed = node.output[3] if len(node.output) > 3 and node.output[3] else f"{node.name}_sum"
        pre_bias = f"{node.name}_presum" if bias else summed
        nodes.append(helper.make_node("Add", [x, skip], [pre_bias], name=f"{node.name}_add"))
        if bias:
            nodes.append(helper.make_node("Add", [pre_bias, bias], [summed], name=f"{node.name}_bias"))
        nodes.append(helper.make_node("LayerNormalization", [summed, gamma] + ([beta] if beta else []),
                                      [node.output[0]], name=f"{node.name}_ln", axis=-1, epsilon=eps))
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def choose_skip_layer_norm(model, config: FuseConfig, ctx: StepContext, scratch: Path,
                           inputs: list | None = None) -> tuple[object, dict]:
    import copy

    if not any(n.op_type == "SkipLayerNormalization" for n in model.graph.node):  # nothing to choose: say so
        return model, {"chosen": None, "why": "no SkipLayerNormalization was fused"}
    if config.skip_layer_norm == "fused":
        return model, {"chosen": "fused"}
    split = copy.deepcopy(model)
    count = split_skip_layernorm(split)
    if config.skip_layer_norm == "split":
        return split, {"chosen": "split", "split": count}
    fused_path, split_path = scratch / "skipln_fused.onnx", scratch / "skipln_split.onnx"
    save_model(model, fused_path)
    save_model(split, split_path)
    from optkit.eval.measure import quick_p50s

    # the input's specs: a fixed batch dimension is timed at that batch
    fused_ms, split_ms = quick_p50s([Artifact(path=p, format="onnx", inputs=inputs or []) for p in (fused_path, split_path)],
                                    ctx.data, ctx.settings)
    chosen = "split" if split_ms < fused_ms else "fused"
    info = {"chosen": chosen, "fused_p50_ms": fused_ms, "split_p50_ms": split_ms, "split": count if chosen == "split" else 0}
    return (split if chosen == "split" else model), info


def transformer_fuse(model, config: FuseConfig) -> tuple[object, dict[str, int], dict]:
    return optimize_transformer(model, config.model_type, config.num_heads, config.hidden_size)


class FuseDetails(Details):
    level: str
    ops_before: dict[str, int]
    nodes_before: int
    ops_after: dict[str, int] | None = None
    nodes_after: int | None = None
    conv_bn_folded: int | None = None
    fused_ops: dict[str, int] | None = None  # op types the fusions introduced
    verification: Verification | None = None
    transformer: dict[str, Any] | None = None  # optimizer parameters, what it fused, the SkipLayerNorm choice
    transformer_skipped: str | None = None
    opset_upgraded: list[int] | None = None
    hardware_specific: bool | None = None
    kept_input: bool | None = None


FUSED_OPSET = 17  # LayerNormalization, which the transformer fusions write, is an ONNX op from opset 17


def _upgrade_for_fusion(model, ctx: StepContext, details: FuseDetails) -> tuple[object, bool]:
    """Transformer fusions write opset-17 ops: an older model is converted first (and says so), or, where
    the converter cannot, the transformer fusions are skipped rather than writing an invalid model."""
    from onnx import version_converter

    old = opset_of(model)
    try:
        upgraded = version_converter.convert_version(model, FUSED_OPSET)
    except Exception as exc:  # the converter lacks adapters for some ops
        ctx.ui.warn(f"fuse: transformer fusions need opset {FUSED_OPSET} and this model (opset {old}) could not be "
                    f"converted ({type(exc).__name__}); they are skipped")
        details.transformer_skipped = f"opset {old} could not be converted to {FUSED_OPSET}"
        return model, False
    ctx.ui.info(f"fuse: opset {old} -> {FUSED_OPSET} first: the transformer fusions write LayerNormalization (opset 17)")
    details.opset_upgraded = [old, FUSED_OPSET]
    return upgraded, True


class FuseStep(Step):
    name = "fuse"
    summary = "operator fusion: transformer fusions + ONNX Runtime offline graph optimizations"
    accepts = ("onnx",)
    produces = "onnx"
    suffix = ".onnx"
    Config = FuseConfig
    Details = FuseDetails

    def run(self, ctx: StepContext, artifact: Artifact, config: FuseConfig) -> StepResult:
        from optkit.backends.onnxruntime import ort_offline
        from optkit.backends import onnx_io
        from optkit.types.files import scratch_dir
        from optkit.types.ui import quiet_libraries

        model = onnx_io.load_model(artifact.path)
        before = op_counts(model)
        details = FuseDetails(level=config.level, ops_before=before, nodes_before=sum(before.values()))
        run_transformer = config.transformer == "on" or (config.transformer == "auto" and has_attention(model))
        if run_transformer and opset_of(model) < FUSED_OPSET:
            model, run_transformer = _upgrade_for_fusion(model, ctx, details)
        with quiet_libraries(), scratch_dir() as tmp:
            if run_transformer:
                model, stats, params = transformer_fuse(model, config)
                model, skip_info = choose_skip_layer_norm(model, config, ctx, tmp, artifact.inputs)
                details.transformer = {**params, "optimizer_fused": stats, "skip_layer_norm": skip_info}
            staged = tmp / "stage.onnx"
            save_model(model, staged)
            ort_offline(staged, ctx.out_path, config.level, ctx.settings.threads)
        if config.level == "all":
            ctx.ui.warn("fuse --level all writes layout transforms for this CPU's instruction set: the file is "
                        "hardware-specific (use extended for a portable ONNX Runtime model)")
            details.hardware_specific = True
        out, check = finish(ctx, artifact, config, "fused", hint="Try a lower --level or --transformer off, and report it")
        after = op_counts(onnx_io.load_model(ctx.out_path))
        if details.transformer is not None:  # what the fused graph holds, after any split
            details.transformer["fused"] = {op: after[op] for op in (
                "Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
                "EmbedLayerNormalization", "BiasGelu", "Gelu", "FastGelu") if after.get(op)}
        details.ops_after, details.nodes_after = after, sum(after.values())
        details.conv_bn_folded = before.get("BatchNormalization", 0) - after.get("BatchNormalization", 0)
        details.fused_ops = {op: n for op, n in after.items() if op not in before}  # op types the fusions introduced
        details.verification = check
        if details.nodes_after >= details.nodes_before and not details.fused_ops:
            # nothing fused and nothing removed: the rewrite is no better than its input, so the input is the output
            import shutil

            shutil.copyfile(artifact.path, ctx.out_path)
            out = onnx_io.produced_artifact(ctx.out_path, "fused", artifact.task)
            details.kept_input, details.ops_after, details.nodes_after = True, before, details.nodes_before
            details.conv_bn_folded, details.opset_upgraded = 0, None
            ctx.ui.info(f"fuse: no fusion reduced the graph ({details.nodes_before} -> {sum(after.values())} nodes): "
                        "the input is kept as it is")
        return StepResult(artifact=out, details=details)

    @staticmethod
    def describe(details: FuseDetails) -> str:
        if details.kept_input:
            return f"{details.level}: nothing fused or removed ({details.nodes_before} nodes): input kept as it is"
        fused = ", ".join(f"{k} {v}" for k, v in (details.fused_ops or {}).items()) or "no fused ops"
        bn = f"; {details.conv_bn_folded} BN folded" if details.conv_bn_folded else ""
        opset = f"; opset {details.opset_upgraded[0]} -> {details.opset_upgraded[1]}" if details.opset_upgraded else ""
        return f"{details.level}: nodes {details.nodes_before} -> {details.nodes_after}; {fused}{bn}{opset}"
