"""The guard's int8 recipes: which nodes each keeps float, which are skipped on a model, and what each builds."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from optkit.steps.quantize.recipes import RECIPES, applicable, group_nodes, smooth_quant_unavailable


def _attention_block(path) -> None:
    """LayerNorm -> Q/K/V MatMuls (weights) -> scores = Q @ K^T (two activations) -> Softmax -> @ V -> out MatMul."""
    rng = np.random.default_rng(0)
    d = 16
    inits = [numpy_helper.from_array(rng.standard_normal((d, d)).astype(np.float32) * 0.3, n)
             for n in ("wq", "wk", "wv", "wo")]
    inits += [numpy_helper.from_array(np.ones(d, np.float32), "g"), numpy_helper.from_array(np.zeros(d, np.float32), "b")]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], name="ln", axis=-1),
        helper.make_node("MatMul", ["ln", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["ln", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["ln", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["ctx"], name="context"),
        helper.make_node("MatMul", ["ctx", "wo"], ["o"], name="o_proj"),
        helper.make_node("Add", ["o", "x"], ["y"], name="residual"),
    ]
    graph = helper.make_graph(nodes, "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _conv_net(path) -> None:
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_node_groups_of_an_attention_block(tmp_path):
    _attention_block(tmp_path / "a.onnx")
    model = onnx.load(str(tmp_path / "a.onnx"))
    assert group_nodes(model, ("act_matmul",)) == ["context", "scores"]  # both inputs are activations
    assert group_nodes(model, ("ln_fed_matmul",)) == ["k_proj", "q_proj", "v_proj"]
    assert group_nodes(model, ("softmax",)) == ["softmax"]
    assert group_nodes(model, ()) == []


def test_recipes_that_would_build_the_same_model_are_skipped_with_a_reason(tmp_path):
    _attention_block(tmp_path / "a.onnx")
    _conv_net(tmp_path / "c.onnx")
    on_attention = dict((r.name, skip) for r, skip in applicable(onnx.load(str(tmp_path / "a.onnx"))))
    assert on_attention["compute ops only"] is None and on_attention["compute ops, act x act float"] is None
    assert on_attention["SmoothQuant"] == smooth_quant_unavailable()  # tried only where ORT can run it
    on_conv = dict((r.name, skip) for r, skip in applicable(onnx.load(str(tmp_path / "c.onnx"))))
    assert on_conv["compute ops, act x act float"] == "same as 'compute ops only' on this model"
    assert on_conv["compute ops, LayerNorm-fed MatMuls float"] == "same as 'compute ops only' on this model"
    assert on_conv["symmetric activations"] is None and len(on_conv) == len(RECIPES)


def test_smooth_quant_is_reported_unavailable_without_the_onnx_adaptor():
    import importlib.util

    try:
        present = importlib.util.find_spec("neural_compressor.adaptor.ox_utils.smooth_quant") is not None
    except (ImportError, ValueError):
        present = False
    reason = smooth_quant_unavailable()
    assert (reason is None) == present
    if reason:
        assert "neural-compressor 2.x" in reason


@pytest.mark.parametrize("name", ["compute ops, act x act float", "compute ops, LayerNorm-fed MatMuls float",
                                  "symmetric activations"])
def test_each_recipe_builds_a_valid_model_with_its_nodes_float(tmp_path, name):
    from optkit.eval.data import EvalData
    from optkit.steps.quantize.modes import quantize_static
    from optkit.steps.quantize.config import QuantizeConfig

    _attention_block(tmp_path / "a.onnx")
    recipe = next(r for r in RECIPES if r.name == name)
    x = np.random.default_rng(2).standard_normal((32, 8, 16)).astype(np.float32)
    out = tmp_path / "q.onnx"
    details = quantize_static(tmp_path / "a.onnx", out, tmp_path, EvalData({"x": x}, None), QuantizeConfig(), None,
                              recipe=recipe)
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    fed_by_dq = {n.name for n in model.graph.node if all(producers.get(i) == "DequantizeLinear" for i in n.input[:2])}
    kept = set(group_nodes(onnx.load(str(tmp_path / "a.onnx")), recipe.float_groups))
    assert kept and not kept & fed_by_dq if recipe.float_groups else "q_proj" in fed_by_dq  # structure
    if recipe.op_types:
        assert not {"softmax", "residual"} & fed_by_dq  # only compute ops get Q/DQ inputs
    assert details["recipe"] == name and details["nodes"]["float_by"].get("recipe", 0) == len(kept & {
        "q_proj", "k_proj", "v_proj", "scores", "context", "o_proj"})
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ref = ort.InferenceSession(str(tmp_path / "a.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x[:4]})[0]
    got = sess.run(None, {"x": x[:4]})[0]
    cos = (ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)
    assert cos > 0.99  # numerics: int8 close to float
