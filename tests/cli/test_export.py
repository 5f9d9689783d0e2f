"""optkit export end to end: files written, sidecar, ledger, and every error case."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.conftest import FAST, invoke, run_cli, sidecar


def test_export_folder_writes_checked_self_contained_onnx(tiny, tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("export", str(tiny["folder"]), "-o", str(out), *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out), full_check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.optkit-ref.npz", "m.onnx.optkit.json"]
    model = onnx.load(str(out))
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the ledger: original torch row + ONNX row, both measured
    assert "original" in result.stdout and "export" in result.stdout


def test_export_sidecar_records_lineage_and_measurements(tiny, tmp_path):
    out = tmp_path / "m.onnx"
    assert invoke("export", str(tiny["folder"]), "-o", str(out), *FAST).exit_code == 0
    car = sidecar(out)
    rec = car["record"]
    assert rec["step"] == "export" and rec["format"] == "onnx"
    assert rec["parent"]["artifact"] == str(tiny["folder"].resolve())
    assert len(rec["sha256"]) == 64 and rec["size_bytes"] == out.stat().st_size
    assert rec["details"]["verification"]["batch_sizes"] == [1, 8]
    assert rec["details"]["verification"]["max_abs_diff"] < 1e-4
    assert set(rec["versions"]) >= {"python", "torch", "onnx", "onnxruntime"}
    assert rec["eval_data"]["samples"] == 24
    assert car["lineage"][0]["step"] == "original" and car["lineage"][0]["format"] == "torch"
    assert rec["metrics"]["latency"][0]["p50_ms"] > 0


def test_onnx_top1_equals_torch_top1(tiny, tmp_path):
    out = tmp_path / "m.onnx"
    assert invoke("export", str(tiny["folder"]), "-o", str(out), *FAST).exit_code == 0
    steps = json.loads(invoke("report", str(out), "--json").stdout)["steps"]
    assert steps[0]["accuracy"]["value"] == steps[1]["accuracy"]["value"] == pytest.approx(0.75)
    assert steps[1]["fidelity"]["max_abs_diff"] < 1e-4 and steps[1]["fidelity"]["cosine"] > 0.99999


def test_export_factory_reference_with_weights_and_input_shape(tiny, tmp_path):
    out = tmp_path / "f.onnx"
    result = invoke("export", f"{tiny['model_py']}:build", "--weights", str(tiny["weights"]),
                    "--input-shape", "input:1x1x8x8", "-o", str(out), *FAST)
    assert result.exit_code == 0, result.output
    assert "synthetic" in sidecar(out)["record"]["details"]["verification"]["samples"]
    assert sidecar(out)["record"]["metrics"]["accuracy"] is None  # no labels, no fake accuracy


def test_export_static_batch(tiny, tmp_path):
    out = tmp_path / "s.onnx"
    result = invoke("export", str(tiny["folder"]), "-o", str(out), "--static-batch",
                    "--input-shape", "input:4x1x8x8", *FAST)
    assert result.exit_code == 0, result.output
    dims = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [4, 1, 8, 8]


@pytest.mark.parametrize("kind", ["torchscript", "exported_program"])
def test_export_saved_torch_programs(tiny, tmp_path, kind):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_model_for_save", tiny["model_py"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.build().eval()
    net.load_state_dict(torch.load(tiny["weights"], weights_only=True))
    example = torch.randn(2, 1, 8, 8)
    if kind == "torchscript":
        src = tmp_path / "tiny.ts.pt"
        torch.jit.save(torch.jit.trace(net, example), str(src))
    else:
        src = tmp_path / "tiny.pt2"
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), str(src))
    out = tmp_path / "o.onnx"
    result = invoke("export", str(src), "-o", str(out), "--eval-data", str(tiny["eval"]), *FAST)
    assert result.exit_code == 0, result.output
    x = np.load(tiny["eval"])["input"][:5]
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, net(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


@pytest.mark.slow
def test_export_subprocess_and_report_json(tiny, tmp_path):
    out = tmp_path / "sub" / "m.onnx"
    proc = run_cli("export", str(tiny["folder"]), "-o", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("report", str(out), "--json")
    assert proc.returncode == 0
    steps = json.loads(proc.stdout)["steps"]  # stdout is pure JSON
    for step in steps:
        assert {"step", "artifact", "format", "size_bytes", "accuracy", "latency", "fidelity"} <= set(step)
        assert {"metric", "value"} <= set(step["accuracy"])
        assert {"p50_ms", "p90_ms", "batch_size", "threads"} <= set(step["latency"])
        assert {"max_abs_diff", "cosine"} <= set(step["fidelity"])
    assert steps[1]["speedup_vs_original"] > 0


def test_report_markdown(tiny_onnx):
    result = invoke("report", str(tiny_onnx), "--markdown")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("| # | step |") and len([ln for ln in lines if ln.startswith("| ")]) == 3


def test_no_measure_skips_the_ledger(tiny, tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("export", str(tiny["folder"]), "-o", str(out), "--no-measure")
    assert result.exit_code == 0
    metrics = sidecar(out)["record"]["metrics"]
    assert "latency" not in metrics and "accuracy" not in metrics
    assert "original" not in result.stdout
