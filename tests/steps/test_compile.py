"""compile: ort-cpu (tuned session), openvino-cpu (fp32 / int8), and clean refusals for GPU targets."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FAST, invoke, run_cli, sidecar

LOOSE = ["--max-accuracy-drop", "50"]


def test_ort_cpu_records_tuned_session(tiny_onnx, tmp_path):
    out = tmp_path / "ort.onnx"
    result = invoke("compile", str(tiny_onnx), "-o", str(out), "--target", "ort-cpu", *FAST)
    assert result.exit_code == 0, result.output
    car = sidecar(out)
    details = car["record"]["details"]
    assert len(details["tuning"]) == 4 and details["chosen"] in [t["session"] for t in details["tuning"]]
    assert car["runtime"]["session"] == details["chosen"]
    assert details["check"]["max_abs_diff"] < 1e-4


def test_openvino_fp32_ir_matches_onnx(tiny, tiny_onnx, tmp_path):
    pytest.importorskip("openvino")
    import onnxruntime as ort

    import optkit

    out = tmp_path / "m.xml"
    result = invoke("compile", str(tiny_onnx), "-o", str(out), "--target", "openvino-cpu", *FAST)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.bin").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml", "m.xml.optkit.json"]
    assert sidecar(out)["runtime"]["inference_precision"] == "f32"
    x = np.load(tiny["eval"])["input"][:6]
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": x})[0]
    with optkit.load(out) as model:  # the deployment API applies the recorded precision
        np.testing.assert_allclose(model(x), ref, atol=1e-4)


def test_openvino_int8_from_fp32_uses_nncf_and_calibration_split(tiny_onnx, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "q.xml"
    result = invoke("compile", str(tiny_onnx), "-o", str(out), "--target", "openvino-cpu", "--precision", "int8",
                    *LOOSE, *FAST, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"][-1]["format"] == "openvino"  # NNCF's progress bars kept off stdout
    details = sidecar(out)["record"]["details"]
    assert "NNCF" in details["int8_source"] and details["fake_quantize_nodes"] > 0
    assert details["check"]["metric"] == "top1" and "drop" in details["check"]
    assert details["nncf"]["preset"] == "performance" and "fast_bias_correction" not in details["nncf"]


def test_openvino_int8_nncf_preset_and_bias_correction_reach_nncf(tiny_onnx, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "q.xml"
    result = invoke("compile", str(tiny_onnx), "-o", str(out), "--target", "openvino-cpu", "--precision", "int8",
                    "--nncf-preset", "mixed", "--no-fast-bias-correction", *LOOSE, *FAST)
    assert result.exit_code == 0, result.output
    nncf = sidecar(out)["record"]["details"]["nncf"]
    assert nncf["preset"] == "mixed" and nncf["fast_bias_correction"] is False
    assert sidecar(out)["record"]["details"]["fake_quantize_nodes"] > 0


def test_report_and_profile_on_openvino(tiny_onnx, tmp_path):
    pytest.importorskip("openvino")
    out = tmp_path / "m.xml"
    assert invoke("compile", str(tiny_onnx), "-o", str(out), "--target", "openvino-cpu", "--no-measure").exit_code == 0
    result = invoke("profile", str(out), "--batch-sizes", "1,2", *FAST)
    assert result.exit_code == 0, result.output
    assert "openvino" in result.stdout
    steps = json.loads(invoke("report", str(out), "--json").stdout)["steps"]
    assert [r["step"] for r in steps] == ["original", "export", "compile"]


def _exit_2(proc, needle, out):
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not out.parent.exists()


def test_gpu_targets_without_gpu_exit_2(tiny_onnx, tmp_path):
    from optkit.backends.tensorrt import nvidia_gpu_present

    if nvidia_gpu_present():
        pytest.skip("this machine has an NVIDIA GPU")
    out = tmp_path / "out" / "m.engine"
    proc = run_cli("compile", str(tiny_onnx), "-o", str(out), "--target", "tensorrt", "--precision", "fp16")
    _exit_2(proc, "tensorrt", out)
    assert "optkit[tensorrt]" in proc.stderr or "no NVIDIA GPU" in proc.stderr
    out = tmp_path / "out" / "m.onnx"
    _exit_2(run_cli("compile", str(tiny_onnx), "-o", str(out), "--target", "ort-cuda"), "ort-cuda", out)


def test_unknown_target_and_bad_precision(tiny_onnx, tmp_path):
    out = tmp_path / "out" / "m.onnx"
    _exit_2(run_cli("compile", str(tiny_onnx), "-o", str(out), "--target", "tpu"), "--target", out)
    _exit_2(run_cli("compile", str(tiny_onnx), "-o", str(out), "--target", "ort-cpu", "--precision", "int8"),
            "quantize", out)


def test_int8_without_calibration_data(tiny, tiny_onnx, tmp_path):
    pytest.importorskip("openvino")
    import shutil

    bare = tmp_path / "bare.onnx"
    shutil.copyfile(tiny_onnx, bare)
    out = tmp_path / "out" / "q.xml"
    proc = run_cli("compile", str(bare), "-o", str(out), "--target", "openvino-cpu", "--precision", "int8",
                   "--eval-data", str(tiny["eval"]))
    _exit_2(proc, "calibration data", out)


def test_missing_openvino_extra_is_named(tiny_onnx, tmp_path):
    """With openvino blocked from import, the message names the extra to install."""
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "out" / "m.xml"
    script = textwrap.dedent(f'''
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("openvino", "nncf"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        sys.argv = ["optkit", "compile", {str(tiny_onnx)!r}, "-o", {str(out)!r}, "--target", "openvino-cpu"]
        from optkit.cli.app import main
        main()
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    _exit_2(proc, "optkit[openvino]", out)


def test_openvino_bf16_says_whether_this_cpu_has_native_bf16(tiny_onnx, tmp_path):
    from optkit.backends.openvino import cpu_capabilities

    out = tmp_path / "bf16.xml"
    result = invoke("compile", str(tiny_onnx), "-o", str(out), "--target", "openvino-cpu", "--precision", "bf16",
                    "--max-accuracy-drop", "100", *FAST)
    assert result.exit_code == 0, result.output
    record = sidecar(out)["record"]
    native = "BF16" in cpu_capabilities()
    assert record["details"]["bf16_native"] is native
    assert ("EMULATED" in record["summary"]) is (not native)
    assert ("no native bf16" in result.stderr) is (not native)


@pytest.mark.slow
def test_openvino_output_may_be_a_folder_and_a_wrong_suffix_fails_before_any_work(tiny_onnx, tmp_path):
    pytest.importorskip("openvino")
    folder = tmp_path / "ir"
    folder.mkdir()
    result = invoke("compile", str(tiny_onnx), "-o", str(folder), "--target", "openvino-cpu", "--no-measure")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["model.bin", "model.xml", "model.xml.optkit.json"]
    proc = run_cli("compile", str(tiny_onnx), "-o", str(tmp_path / "m.onnx"), "--target", "openvino-cpu",
                   "--precision", "int8")
    assert proc.returncode == 2 and "must end in .xml" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_an_int8_model_compiled_for_ort_cpu_is_labelled_int8(tiny_onnx, tmp_path):
    qdq = tmp_path / "q.onnx"
    assert invoke("quantize", str(tiny_onnx), "-o", str(qdq), "--mode", "static", *LOOSE, "--no-measure").exit_code == 0
    out = tmp_path / "c.onnx"
    result = invoke("compile", str(qdq), "-o", str(out), "--target", "ort-cpu", *FAST)
    assert result.exit_code == 0, result.output
    record = sidecar(out)["record"]
    assert record["details"]["precision"] == "int8 (QDQ input)" and record["summary"].startswith("ort-cpu int8")
