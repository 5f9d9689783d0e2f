"""fuse: Conv+BN folding and transformer fusions, each checked numerically and structurally."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import FAST, invoke, sidecar


@pytest.fixture()
def conv_bn(tmp_path):
    rng = np.random.default_rng(0)
    inits = {
        "w": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
        "scale": rng.uniform(0.5, 1.5, 4).astype(np.float32), "bias": rng.standard_normal(4).astype(np.float32),
        "mean": rng.standard_normal(4).astype(np.float32), "var": rng.uniform(0.5, 1.5, 4).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "conv_bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "conv_bn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.standard_normal((8, 1, 8, 8)).astype(np.float32))
    return path, data


def test_conv_bn_folding(conv_bn, tmp_path):
    src, data = conv_bn
    out = tmp_path / "f.onnx"
    result = invoke("fuse", str(src), "-o", str(out), "--eval-data", str(data), *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out), full_check=True)
    x = np.load(data)["x"]
    np.testing.assert_allclose(ort.InferenceSession(str(out)).run(None, {"x": x})[0],
                               ort.InferenceSession(str(src)).run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)
    fused = onnx.load(str(out))
    assert "BatchNormalization" not in {n.op_type for n in fused.graph.node}
    details = sidecar(out)["record"]["details"]
    assert details["conv_bn_folded"] == 1 and details["nodes_after"] < details["nodes_before"]
    assert "transformer" not in details  # no attention in this graph


@pytest.mark.slow
def test_transformer_fusions_fire(tiny, tmp_path):
    exported = tmp_path / "vit.onnx"
    result = invoke("export", f"{tiny['model_py']}:build_vit", "--eval-data", str(tiny["eval"]), "-o", str(exported), *FAST)
    assert result.exit_code == 0, result.output
    out = tmp_path / "vit_fused.onnx"
    result = invoke("fuse", str(exported), "-o", str(out), *FAST)
    assert result.exit_code == 0, result.output
    details = sidecar(out)["record"]["details"]
    transformer = details["transformer"]
    assert transformer["num_heads"] == 2 and transformer["hidden_size"] == 16  # detected from the graph
    assert transformer["fused"].get("Attention", 0) >= 1
    assert transformer["fused"].get("LayerNormalization", 0) + transformer["fused"].get("SkipLayerNormalization", 0) >= 1
    assert transformer["skip_layer_norm"]["chosen"] in ("fused", "split")
    assert details["nodes_after"] < details["nodes_before"]
    assert details["verification"]["max_abs_diff"] < 1e-3
    x = np.load(tiny["eval"])["input"][:8]
    np.testing.assert_allclose(ort.InferenceSession(str(out)).run(None, {"input": x})[0],
                               ort.InferenceSession(str(exported)).run(None, {"input": x})[0], rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_split_skip_layernorm_is_exact(tiny, tmp_path):
    exported = tmp_path / "vit.onnx"
    assert invoke("export", f"{tiny['model_py']}:build_vit", "--eval-data", str(tiny["eval"]), "-o", str(exported),
                  "--no-measure").exit_code == 0
    fused, split = tmp_path / "fused.onnx", tmp_path / "split.onnx"
    for path, mode in ((fused, "fused"), (split, "split")):
        rec = tmp_path / f"{mode}.yaml"
        rec.write_text(f"model: {exported}\nmeasure: {{enabled: false}}\nsteps:\n  - fuse: {{skip_layer_norm: {mode}, output: {path}}}\n")
        assert invoke("run", str(rec)).exit_code == 0
    ops_fused = {n.op_type for n in onnx.load(str(fused)).graph.node}
    ops_split = {n.op_type for n in onnx.load(str(split)).graph.node}
    if "SkipLayerNormalization" in ops_fused:
        assert "SkipLayerNormalization" not in ops_split
    x = np.load(tiny["eval"])["input"][:8]
    np.testing.assert_allclose(ort.InferenceSession(str(split)).run(None, {"input": x})[0],
                               ort.InferenceSession(str(fused)).run(None, {"input": x})[0], rtol=1e-4, atol=1e-5)


def test_level_all_warns_hardware_specific(conv_bn, tmp_path):
    src, data = conv_bn
    out = tmp_path / "all.onnx"
    result = invoke("fuse", str(src), "-o", str(out), "--level", "all", "--eval-data", str(data), "--no-measure")
    assert result.exit_code == 0
    assert "hardware-specific" in result.stderr
    assert sidecar(out)["record"]["details"]["hardware_specific"] is True


def test_an_opset_11_transformer_is_upgraded_before_fusion_and_stays_valid(tiny, tmp_path):
    """Transformer fusions write LayerNormalization (opset 17): an opset-11 file must not come out invalid."""
    src = tmp_path / "vit11.onnx"
    exported = invoke("export", f"{tiny['model_py']}:build_vit", "--input-shape", "input:1x1x8x8", "--exporter",
                      "torchscript", "--opset", "11", "-o", str(src), "--no-measure")
    assert exported.exit_code == 0, exported.output
    assert onnx.load(str(src)).opset_import[0].version == 11
    out = tmp_path / "f.onnx"
    result = invoke("fuse", str(src), "-o", str(out), "--eval-data", str(tiny["eval"]), *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out), full_check=True)
    details = sidecar(out)["record"]["details"]
    assert details["opset_upgraded"] == [11, 17] and details["nodes_after"] < details["nodes_before"]
    assert details["transformer"]["fused"].get("LayerNormalization") or details["transformer"]["fused"].get("SkipLayerNormalization")
    x = np.load(tiny["eval"])["input"]
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    ref = ort.InferenceSession(str(src)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_a_fuse_that_fuses_nothing_keeps_its_input(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Sigmoid", ["r"], ["y"], name="sig")]
    graph = helper.make_graph(nodes, "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    src = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(src))
    out = tmp_path / "f.onnx"
    result = invoke("fuse", str(src), "-o", str(out), "--transformer", "off", *FAST)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == src.read_bytes()
    details = sidecar(out)["record"]["details"]
    assert details["kept_input"] and details["nodes_after"] == details["nodes_before"] == 2
    assert "input kept" in sidecar(out)["record"]["summary"]


@pytest.mark.slow
def test_no_skip_layer_norm_choice_is_reported_when_none_was_fused(tiny, tmp_path):
    src = tmp_path / "vit.onnx"
    assert invoke("export", f"{tiny['model_py']}:build_vit", "--input-shape", "input:1x1x8x8", "-o", str(src),
                  "--no-measure").exit_code == 0
    out = tmp_path / "f.onnx"
    result = invoke("fuse", str(src), "-o", str(out), "--eval-data", str(tiny["eval"]), *FAST)
    assert result.exit_code == 0, result.output
    transformer = sidecar(out)["record"]["details"].get("transformer")
    if transformer:  # a choice only where the fusion fired, and the graph holds what was chosen
        skip, left = transformer["skip_layer_norm"], transformer["fused"].get("SkipLayerNormalization", 0)
        if skip["chosen"] is None:
            assert left == 0 and "no SkipLayerNormalization" in skip["why"]
        elif skip["chosen"] == "split":  # fused, then timed slower than Add + LayerNormalization, and split back
            assert left == 0 and skip["split"] > 0
        else:
            assert left > 0
