"""quantize: QDQ static, dynamic, fp16, auto; accuracy-judged; every bad input a clean exit 2."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import FAST, invoke, run_cli, sidecar

LOOSE = ["--max-accuracy-drop", "50"]  # the tiny model's 24 labels make one sample worth 4 points


def _ops(path) -> dict:
    counts: dict = {}
    for node in onnx.load(str(path)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _cosine(a, b) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_static_qdq(tiny, tiny_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "static", "--method", "minmax", *LOOSE, *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out), full_check=True)
    ops = _ops(out)
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    x = np.load(tiny["eval"])["input"]
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    assert _cosine(got, ref) > 0.98
    details = sidecar(out)["record"]["details"]
    assert details["method"] == "minmax" and details["calib_samples"] == 20
    assert details["calib_source"] == "the model's calibration split"
    assert details["excluded_small_convs"]  # the 1-input-channel conv stays fp32
    assert details["nodes"]["quantized"] >= 1 and details["nodes"]["excluded"] == 1
    assert "preprocess" in details
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.optkit.json"]  # no stray files


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_methods(tiny_onnx, tmp_path, method):
    out = tmp_path / "q.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "static", "--method", method,
                    "--calib-samples", "12", *LOOSE, "--no-measure")
    assert result.exit_code == 0, result.output
    assert sidecar(out)["record"]["details"]["calib_samples"] == 12


def test_dynamic_warns_on_convs(tiny_onnx, tmp_path):
    out = tmp_path / "d.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "dynamic", *LOOSE, *FAST)
    assert result.exit_code == 0, result.output
    assert "ConvInteger" in result.stderr
    ops = _ops(out)
    assert ops.get("ConvInteger", 0) + ops.get("DynamicQuantizeLinear", 0) > 0
    assert sidecar(out)["record"]["details"]["dynamic_convs"] >= 1


def test_fp16_keeps_io_float32(tiny, tiny_onnx, tmp_path):
    out = tmp_path / "h.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "fp16", *LOOSE, *FAST)
    assert result.exit_code == 0, result.output
    model = onnx.load(str(out))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    x = np.load(tiny["eval"])["input"]
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, ref, atol=5e-2, rtol=5e-2)


def test_auto_records_its_choice_and_never_keeps_a_slower_model(tiny_onnx, tmp_path):
    out = tmp_path / "a.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "auto", *LOOSE, *FAST)
    if result.exit_code == 1:  # on a model this small, int8's overhead usually outweighs its gain
        assert "no mode within tolerance is faster than the input" in result.stderr
        assert not out.exists()
        return
    assert result.exit_code == 0, result.output
    auto = sidecar(out)["record"]["details"]["auto"]
    assert auto["chosen"] in {c["mode"] for c in auto["candidates"]} and "fastest" in auto["why"]
    chosen = next(c for c in auto["candidates"] if c["mode"] == auto["chosen"])
    assert chosen["p50_ms"] < auto["input_p50_ms"]  # timed side by side with the input


@pytest.mark.slow
def test_accuracy_budget_failure_writes_nothing(tiny, tiny_onnx, tmp_path):
    unlabeled = tmp_path / "unlabeled.npz"
    np.savez(unlabeled, input=np.load(tiny["eval"])["input"])
    out = tmp_path / "out" / "q.onnx"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {tiny_onnx}\neval_data: {unlabeled}\nmeasure: {{budget_s: 0.05}}\n"
                      f"steps:\n  - quantize: {{mode: static, min_cosine: 1.0, output: {out}}}\n")
    proc = run_cli("run", str(recipe))
    assert proc.returncode == 1, proc.stderr
    assert "outside tolerance" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.parent.exists()
    # without labels the budget that judged it is the cosine: the hint names that one, not the top-1 budget
    error = next(ln for ln in proc.stderr.splitlines() if ln.startswith("error:"))
    assert "--min-cosine" in error and "--max-drop" not in error and "--exclude" in error


def _clean_exit_2(proc, needle, out):
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not out.parent.exists()


def test_static_without_calibration_data(tiny, tiny_onnx, tmp_path):
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(tiny_onnx, bare)  # no sidecar: no recorded calibration split
    out = tmp_path / "out" / "q.onnx"
    proc = run_cli("quantize", str(bare), "-o", str(out), "--mode", "static", "--eval-data", str(tiny["eval"]))
    _clean_exit_2(proc, "needs calibration data", out)


def test_unknown_method(tiny_onnx, tmp_path):
    out = tmp_path / "out" / "q.onnx"
    _clean_exit_2(run_cli("quantize", str(tiny_onnx), "-o", str(out), "--method", "magic"), "method", out)


def test_exclude_that_matches_nothing(tiny_onnx, tmp_path):
    out = tmp_path / "out" / "q.onnx"
    proc = run_cli("quantize", str(tiny_onnx), "-o", str(out), "--mode", "static", "--exclude", "NoSuchNode")
    _clean_exit_2(proc, "matches no node name or op type", out)


def test_non_onnx_input(tiny, tmp_path):
    out = tmp_path / "out" / "q.onnx"
    _clean_exit_2(run_cli("quantize", str(tiny["folder"]), "-o", str(out)), "takes onnx models", out)


def test_exclude_by_op_type_keeps_those_nodes_float(tiny_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "static", "--exclude", "Gemm", *LOOSE, "--no-measure")
    assert result.exit_code == 0, result.output
    details = sidecar(out)["record"]["details"]
    assert details["excluded_by_user"] and json.dumps(details["excluded"])


def test_per_channel_upgrades_an_old_opset(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 4, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"], name="relu")], "old",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 8, 8])], [w])
    src = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7), str(src))
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.standard_normal((16, 4, 8, 8)).astype(np.float32))
    out = tmp_path / "q.onnx"
    result = invoke("quantize", str(src), "-o", str(out), "--mode", "static", "--calib-data", str(data),
                    "--eval-data", str(data), "--no-measure")
    assert result.exit_code == 0, result.output
    details = sidecar(out)["record"]["details"]
    assert details["opset_upgraded"] == [11, 13] and details["per_channel"] is True
    assert details["calib_source"] == "calib data d.npz"
    assert next(o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")) >= 13


def test_depthwise_convs_are_quantized_and_a_thin_stem_is_excluded_with_its_reason(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w_stem"),
             numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "w_dw"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "w_pw")]
    nodes = [helper.make_node("Conv", ["x", "w_stem"], ["a"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"], name="r1"),
             helper.make_node("Conv", ["ar", "w_dw"], ["b"], name="depthwise", pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["b"], ["br"], name="r2"),
             helper.make_node("Conv", ["br", "w_pw"], ["y"], name="pointwise")]
    graph = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 8, 8])], inits)
    src = tmp_path / "dw.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(src))
    data = tmp_path / "x.npz"
    np.savez(data, x=rng.standard_normal((32, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "q.onnx"
    result = invoke("quantize", str(src), "-o", str(out), "--mode", "static", "--calib-data", str(data),
                    "--eval-data", str(data), "--min-cosine", "0.9", *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out))
    details = sidecar(out)["record"]["details"]
    assert details["excluded_small_convs"] == ["stem"] and "depthwise" not in details["excluded"]
    assert "(float: 1 conv(s) with < 4 input channels (skip_small_convs))" in sidecar(out)["record"]["summary"]
    fed_by_dq = {n.name for n in onnx.load(str(out)).graph.node if n.op_type == "Conv"
                 and any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    assert {"depthwise", "pointwise"} <= fed_by_dq and "stem" not in fed_by_dq


def test_an_unmeasured_int8_output_slower_than_its_input_is_still_flagged(tiny_onnx, tmp_path, monkeypatch):
    """--no-measure skips the ledger, not the speed check of a step whose point is speed."""
    import optkit.eval.measure as measure

    calls = []

    def fake_p50s(artifacts, data, settings, budget_s=0.5):
        calls.append([a.path.name for a in artifacts])
        return [1.0, 2.5]  # the input 1.0 ms, the output 2.5 ms

    monkeypatch.setattr(measure, "quick_p50s", fake_p50s)
    out = tmp_path / "q.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "static", *LOOSE, "--no-measure", *FAST)
    assert result.exit_code == 0, result.output
    assert len(calls) == 1 and calls[0][0] == tiny_onnx.name and len(calls[0]) == 2  # input and output, side by side
    assert "quantize output is SLOWER than its input: 2.500 vs 1.000 ms" in result.output
    speed = sidecar(out)["record"]["details"]["speed_vs_input"]
    assert speed["speedup"] == pytest.approx(0.4) and speed["timing"] == "interleaved, batch 1"
