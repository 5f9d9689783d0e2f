"""quantize --mode weight-only: int4/int8 weights in blocks, activations float, with ONNX Runtime's
``MatMulNBitsQuantizer`` (round-to-nearest; each MatMul with a constant weight becomes ``MatMulNBits``).

The output projection (``lm_head``: the last MatMul before the first graph output) is quantized unless
``--no-lm-head``; the token embedding (a Gather on a constant table) only with ``--embedding`` (4 bits:
``GatherBlockQuantized``); ``--exclude`` keeps named nodes or op types float. A causal-LM export with past
key/values is judged on the evaluation prompts through ``backends/onnx_causal.OrtCausalLM``: the mean cosine of
the prompts' logits to the input's (at least ``--min-cosine``, default ``GENERATIVE_MIN_COSINE``) and the greedy
continuations (recorded: token agreement; perplexity is the ledger's measure); any other ONNX model is judged on
its outputs like every quantize mode.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from optkit.steps.quantize.config import GenerativeCheck, QuantizeConfig
from optkit.types.errors import UsageError
from optkit.types.records import Check

if TYPE_CHECKING:
    from optkit.steps.base import StepContext
    from optkit.types.artifact import Artifact

# a floor against a broken product, not the budget: a causal LM's budget is its perplexity (the ledger's
# max_ppl_increase); measured: int4 group 128 of a trained tiny Llama 0.998, of a random-weight one 0.93
GENERATIVE_MIN_COSINE = 0.9
JUDGE_NEW_TOKENS = 16
COMPUTE = ("MatMul", "Gather")


def check_weight_only(config: QuantizeConfig) -> None:
    """Options weight-only cannot honour, refused before anything runs."""
    if config.engine != "ort":
        raise UsageError("--mode weight-only runs on ONNX Runtime's quantizer", hint="Drop --engine inc")
    if config.embedding and config.bits != 4:
        raise UsageError(f"--embedding quantizes the embedding table at 4 bits only (asked: {config.bits})",
                         hint="Pass --bits 4 or drop --embedding")


def lm_head_node(model: Any) -> str | None:
    """The last MatMul/Gemm on the way to the first graph output (the logits): walked back through the ops
    between (Reshape, Add, Cast...), first data input first."""
    producers = {out: node for node in model.graph.node for out in node.output}
    seen: set[str] = set()
    name = model.graph.output[0].name
    while name in producers and name not in seen:
        seen.add(name)
        node = producers[name]
        if node.op_type in ("MatMul", "Gemm"):
            return str(node.name)
        name = next((i for i in node.input if i in producers), "")
    return None


def _constant_weight_nodes(model: Any, op_types: tuple[str, ...]) -> list[str]:
    """Nodes the quantizer can take: a MatMul with a constant 2-D weight, a Gather on a constant 2-D table."""
    shapes = {t.name: len(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in op_types
            and shapes.get(n.input[1 if n.op_type == "MatMul" else 0]) == 2]


def _opset_21(model: Any) -> Any:
    """The model at opset 21, where int4 tensors exist: the quantizer sets 21 for a quantized Gather without
    converting (ReduceMean's ``axes`` attribute, an input since 18, then fails the checker)."""
    from onnx import version_converter

    from optkit.steps._onnx_common import opset_of

    if opset_of(model) >= 21:
        return model
    try:
        return version_converter.convert_version(model, 21)
    except Exception as exc:
        raise UsageError(f"--embedding needs the model at opset 21, and onnx's converter failed: {exc}"[:300],
                         hint="Drop --embedding (the MatMul weights are quantized without it)") from exc


def quantize_weight_only(src: Path, dst: Path, config: QuantizeConfig) -> dict[str, Any]:
    """Write ``src`` with block-quantized weights to ``dst``; the facts for ``QuantizeDetails``."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from optkit.steps.quantize.modes import resolve_exclude

    check_weight_only(config)
    model = onnx.load(str(src))
    excluded = resolve_exclude(model, config.exclude, "the input") if config.exclude else []
    head = lm_head_node(model)
    if head and not config.lm_head:
        excluded.append(head)
    op_types = COMPUTE if config.embedding else ("MatMul",)
    if config.embedding:
        model = _opset_21(model)
    eligible = _constant_weight_nodes(model, op_types)
    quantizer = MatMulNBitsQuantizer(model, bits=config.bits, block_size=config.group_size,
                                     is_symmetric=config.symmetric, accuracy_level=config.accuracy_level or None,
                                     nodes_to_exclude=excluded, op_types_to_quantize=op_types)
    quantizer.process()
    if quantizer.model.model.ByteSize() > 2_000_000_000:
        raise UsageError("the weight-only model is over 2 GB, which one ONNX file cannot hold",
                         hint="Quantize to --bits 4, or keep this model in OpenVINO")
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=False)
    ops = [n.op_type for n in quantizer.model.model.graph.node]
    quantized = ops.count("MatMulNBits") + ops.count("GatherBlockQuantized")
    if not quantized:
        raise UsageError("--mode weight-only found no MatMul with a constant 2-D weight to quantize",
                         hint="Weight-only quantization is for transformer/linear models; try --mode dynamic")
    kind = f"int{config.bits}"
    return {"mode": "weight-only", "bits": config.bits, "group_size": config.group_size,
            "symmetric": config.symmetric, "accuracy_level": config.accuracy_level,
            "lm_head": (kind if config.lm_head else "float") if head else None,
            "embedding": kind if config.embedding and ops.count("GatherBlockQuantized") else "float",
            "excluded_by_user": excluded if config.exclude else None,
            "nodes": {"quantized": quantized, "quantizable": len(eligible)}}


def is_causal_export(artifact: "Artifact") -> bool:
    from optkit.backends.onnx_io import has_kv_cache

    return has_kv_cache(artifact.path)


def judge_generative(ctx: "StepContext", parent: "Artifact", product: "Artifact",
                     min_cosine: float | None) -> tuple[Check, GenerativeCheck]:
    """The product vs its input on the evaluation prompts: logits cosine per position, greedy continuations."""
    import numpy as np

    from optkit.backends.generative import greedy
    from optkit.backends.onnx_causal import OrtCausalLM
    from optkit.eval.metrics import degenerate
    from optkit.steps._causal_export import prompts_of

    floor = GENERATIVE_MIN_COSINE if min_cosine is None else min_cosine
    prompts = prompts_of(ctx.data)
    cosines: list[float] = []
    agree = same = 0
    total = 0
    broken = None
    with OrtCausalLM(parent, ctx.settings.threads) as base, OrtCausalLM(product, ctx.settings.threads) as quant:
        for prompt in prompts:
            ids = np.array([prompt], dtype=np.int64)
            want, got = base.start(ids), quant.start(ids)
            broken = broken or degenerate({"logits": got}, {"logits": want}, "the input's")
            norms = np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1)
            cosines.extend((want * got).sum(axis=1) / np.maximum(norms, 1e-30))
            a, b = greedy(base, ids, JUDGE_NEW_TOKENS), greedy(quant, ids, JUDGE_NEW_TOKENS)
            prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            agree, total, same = agree + prefix, total + len(a), same + (a == b)
    cosine = float(np.mean(cosines))
    generation = GenerativeCheck(prompts=len(prompts), new_tokens=JUDGE_NEW_TOKENS, token_agreement=agree / total,
                                 same_continuations=same, logits_cosine=cosine, min_cosine=floor)
    ok = broken is None and cosine >= floor
    limit = broken or f"mean logits cosine {cosine:.4f} vs the input {'>=' if ok else '<'} {floor}"
    return Check(ok=ok, limit=limit, cosine_vs_input=cosine, min_cosine=floor, degenerate=broken), generation
