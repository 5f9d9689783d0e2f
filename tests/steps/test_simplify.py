"""simplify: onnx.checker, ONNX Runtime agreement with the input, fewer nodes, dynamic batch kept."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import FAST, invoke, run_cli, sidecar


@pytest.fixture()
def foldable(tmp_path):
    """y = relu(x @ (W1 + W2) + b) with a constant sub-graph to fold and a dead branch."""
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    b = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("Add", ["w1", "w2"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["y"]),
        helper.make_node("Neg", ["xw"], ["dead"]),  # not an output: dead
        helper.make_node("Identity", ["b"], ["b_copy"]),
    ]
    graph = helper.make_graph(
        nodes, "foldable", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (b, "b"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path / "foldable.onnx"
    onnx.save(model, str(path))
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.standard_normal((16, 4)).astype(np.float32))
    return path, data


@pytest.mark.parametrize("engine", ["onnxslim", "onnxsim"])
def test_simplify_folds_and_keeps_outputs(foldable, tmp_path, engine):
    src, data = foldable
    out = tmp_path / f"s_{engine}.onnx"
    result = invoke("simplify", str(src), "-o", str(out), "--engine", engine, "--eval-data", str(data), *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out), full_check=True)
    x = np.load(data)["x"]
    ref = ort.InferenceSession(str(src)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    simplified = onnx.load(str(out))
    assert len(simplified.graph.node) < 6
    assert "Neg" not in {n.op_type for n in simplified.graph.node}
    assert simplified.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    details = sidecar(out)["record"]["details"]
    assert details["engine"] == engine and details["nodes_before"] == 6
    assert details["nodes_after"] == len(simplified.graph.node)


def test_simplify_keeps_the_chain(tiny_onnx, tmp_path):
    out = tmp_path / "s.onnx"
    assert invoke("simplify", str(tiny_onnx), "-o", str(out), *FAST).exit_code == 0
    steps = [r["step"] for r in [*sidecar(out)["lineage"], sidecar(out)["record"]]]
    assert steps == ["original", "export", "simplify"]


def test_non_onnx_input_is_refused(tiny, tmp_path):
    out = tmp_path / "out" / "s.onnx"
    proc = run_cli("simplify", str(tiny["folder"]), "-o", str(out))
    assert proc.returncode == 2 and "takes onnx models" in proc.stderr and not out.parent.exists()
