"""What fuse and export share about transformer graphs: is there attention, how many heads, and what
ONNX Runtime's transformer optimizer makes of it."""
from __future__ import annotations


def has_attention(model) -> bool:
    ops = {n.op_type for n in model.graph.node}
    return "Softmax" in ops and "MatMul" in ops


def _constants(model) -> dict:
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
    return consts


def _shape_vector(name: str, consts: dict, producers: dict) -> list[int | None] | None:
    """A Reshape's target shape as far as it is constant: [None, None, -1, 32] for Concat(Shape.., -1, 32)."""
    if name in consts:
        return [int(v) for v in consts[name].reshape(-1).tolist()]
    node = producers.get(name)
    if node is None:
        return None
    if node.op_type == "Concat":  # a part that is not constant (Shape -> Gather -> Unsqueeze) is one unknown dim
        out: list[int | None] = []
        for part in node.input:
            out += _shape_vector(part, consts, producers) or [None]
        return out
    if node.op_type == "Unsqueeze" and node.input[0] in consts:
        return [int(v) for v in consts[node.input[0]].reshape(-1).tolist()]
    return None


def _hidden_of(name: str, consts: dict, producers: dict) -> int | None:
    """The width of a projection's output: the last dim of the MatMul weight behind (bias-)Add nodes."""
    node = producers.get(name)
    for _ in range(3):
        if node is None:
            return None
        if node.op_type in ("MatMul", "Gemm"):
            weights = [consts[i] for i in node.input[1:2] if i in consts]
            return int(weights[0].shape[-1]) if weights and weights[0].ndim == 2 else None
        if node.op_type != "Add":
            return None
        node = next((producers[i] for i in node.input if i in producers and producers[i].op_type in ("MatMul", "Gemm", "Add")), None)
    return None


def detect_heads_hidden(model) -> tuple[int, int]:
    """Heads and hidden size from the Reshape that splits heads: [batch, seq, heads, head_dim]. Exporters
    write the heads as -1 (inferred) and the batch and sequence from Shape nodes; then the hidden size is
    the width of the projection the Reshape splits, and heads = hidden / head_dim."""
    consts = _constants(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape = _shape_vector(node.input[1], consts, producers)
        if not shape or len(shape) != 4 or not shape[3] or shape[3] <= 0:
            continue
        heads, head_dim = shape[2], shape[3]
        if heads is not None and heads > 0:
            return heads, heads * head_dim
        hidden = _hidden_of(node.input[0], consts, producers)
        if hidden and hidden % head_dim == 0:
            return hidden // head_dim, hidden
    return 0, 0


def optimize_transformer(model, model_type: str = "bert", num_heads: int = 0, hidden_size: int = 0):
    """ONNX Runtime's transformer optimizer (fusions only, opt_level 0): (model, fused-op counts, parameters).
    Works on a copy: the optimizer rewrites the ModelProto it is given."""
    import copy

    from onnxruntime.transformers.optimizer import optimize_model

    model = copy.deepcopy(model)
    if not num_heads or not hidden_size:
        found_heads, found_hidden = detect_heads_hidden(model)
        num_heads, hidden_size = num_heads or found_heads, hidden_size or found_hidden
    optimized = optimize_model(model, model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                               opt_level=0, use_gpu=False)
    stats = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    return optimized.model, stats, {"model_type": model_type, "num_heads": num_heads, "hidden_size": hidden_size}
