"""quantize --engine inc: Neural Compressor PT2E autotune on a torch model, exported to QDQ ONNX."""
from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import FAST, invoke, run_cli, sidecar

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("neural_compressor") is None or importlib.util.find_spec("torchao") is None,
    reason="needs pip install 'optkit[inc]'")


def test_inc_writes_a_qdq_onnx_within_tolerance_with_its_trial_log(tiny_res, tmp_path):
    out = tmp_path / "inc.onnx"
    result = invoke("quantize", str(tiny_res["folder"]), "-o", str(out), "--engine", "inc", "--mode", "static",
                    "--max-accuracy-drop", "5", *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: t for t in model.graph.initializer}
    weights = [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights and all(inits[w].data_type == onnx.TensorProto.INT8 for w in weights)  # folded to int8 storage
    details = sidecar(out)["record"]["details"]
    assert details["engine"] == "inc" and details["tuned_on"] == "calibration split"
    assert details["inc_trials"][0]["config"] == "fp32 baseline" and len(details["inc_trials"]) >= 2
    assert details["check"]["ok"]
    x = np.load(tiny_res["eval"])["input"]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    ref = np.load(tiny_res["eval"])["labels"]
    assert (got.argmax(1) == ref).mean() >= 0.9


@pytest.mark.parametrize("args,needle", [
    (["--mode", "dynamic"], "does not take --mode dynamic"),
    (["--mode", "fp16"], "does not take --mode fp16"),
])
def test_inc_bad_modes_are_exit_2(tiny_res, tmp_path, args, needle):
    proc = run_cli("quantize", str(tiny_res["folder"]), "-o", str(tmp_path / "q.onnx"), "--engine", "inc", *args)
    assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.slow
def test_inc_takes_torch_models_and_ort_takes_onnx(tiny, tiny_onnx, tmp_path):
    proc = run_cli("quantize", str(tiny_onnx), "-o", str(tmp_path / "q.onnx"), "--engine", "inc")
    assert proc.returncode == 2 and "takes torch models" in proc.stderr
    proc = run_cli("quantize", str(tiny["folder"]), "-o", str(tmp_path / "q.onnx"))
    assert proc.returncode == 2 and "takes onnx models" in proc.stderr
