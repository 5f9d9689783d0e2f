"""The LiteRT backend. A CNN with global pooling (conv, batch norm, conv, mean, flatten, linear) converts with a
dynamic batch (its flatten's reshape made batch-agnostic) and the interpreter matches torch at several batch sizes in
NCHW and NHWC; one whose flatten keeps a spatial reshape (which litert-torch's lowering fixes at the traced batch) is
caught by the batch check and converted at batch 1, said so. ai-edge-quantizer's fp16, int8-dynamic and int8 are
what they claim (tensor and I/O dtypes, ops) and stay close to torch; a .tflite optkit did not write is named by its
signature; without the extra, exit 2 naming it."""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

# found, not imported: litert-torch brings JAX into the process, so the import waits for the tests (run last)
if not all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")):
    pytest.skip("the LiteRT extra is not installed (pip install 'optkit[tflite]')", allow_module_level=True)

from optkit.backends import litert  # noqa: E402
from optkit.types.artifact import Artifact, TensorSpec  # noqa: E402
from optkit.backends.opening import open_artifact
from tests.conftest import invoke  # noqa: E402


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def _pooled_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(16, 3)).eval()
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A pooled CNN as fp32 .tflite in both layouts, with torch's outputs on random 1x8x8 inputs."""
    import torch

    module = _pooled_cnn()
    x = np.random.default_rng(0).standard_normal((24, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        reference = module(torch.from_numpy(x)).numpy()
    source = Artifact(path=Path("pooled"), format="torch", inputs=[TensorSpec("input", ("batch", 1, 8, 8))],
                      outputs=[TensorSpec("logits", ("batch", 3))])
    folder = tmp_path_factory.mktemp("litert")
    built = {}
    for layout in ("nchw", "nhwc"):
        path = folder / f"tiny_{layout}.tflite"
        details = litert.convert_torch(module, (torch.from_numpy(x[:2]),), path, dynamic_batch=True,
                                       channels_last=layout == "nhwc")
        built[layout] = (path, details)
    return {"source": source, "x": x, "reference": reference, "built": built, "folder": folder}


def _runner(converted, path, layout="nchw"):
    src = converted["source"]
    return litert.LiteRTRunner(Artifact(path=path, format="tflite", inputs=src.inputs, outputs=src.outputs,
                                        runtime={"layout": layout}))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_fp32_has_a_dynamic_batch_and_matches_torch(converted, layout):
    path, details = converted["built"][layout]
    assert details["batch"] == "dynamic" and "dynamic_batch_failed" not in details
    assert details["reshapes_made_batch_agnostic"] >= 1  # the flatten before the linear layer
    summary = litert.model_summary(path)
    assert summary["input_dtypes"] == ["float32"] and any("CONV_2D" in op for op in summary["ops"])
    assert ("TRANSPOSE" in summary["ops"]) == (layout == "nchw")  # NHWC input: no layout transpose left inside
    runner = _runner(converted, path, layout)
    x, ref = converted["x"], converted["reference"]
    for size in (1, 8, 5):
        out = runner.infer({"input": x[:size]})["logits"]
        np.testing.assert_allclose(out, ref[:size], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("precision", ["fp16", "int8-dynamic", "int8"])
def test_quantized_variants_are_what_they_claim_and_stay_close(converted, precision):
    src, _ = converted["built"]["nchw"]
    out = converted["folder"] / f"tiny_{precision}.tflite"
    x = converted["x"]
    calib = [{"args_0": x[i:i + 8]} for i in range(0, 24, 8)] if precision == "int8" else None
    details = litert.quantize(src, out, precision, calib)
    summary = litert.model_summary(out)
    dtypes = summary["tensor_dtypes"]
    if precision == "fp16":
        assert dtypes.get("float16", 0) > 0 and summary["ops"].get("DEQUANTIZE", 0) > 0
        assert summary["input_dtypes"] == ["float32"]
    elif precision == "int8-dynamic":
        assert dtypes.get("int8", 0) > 0 and summary["input_dtypes"] == summary["output_dtypes"] == ["float32"]
    else:
        assert details["calibration_feeds"] == 3
        assert summary["input_dtypes"] == summary["output_dtypes"] == ["int8"]  # full integer, I/O included
        assert dtypes.get("float32", 0) == 0
    assert out.stat().st_size < src.stat().st_size
    got = _runner(converted, out).infer({"input": x})["logits"]  # the runner quantizes int8 inputs itself
    assert got.dtype == np.float32 and _cosine(got, converted["reference"]) > 0.98


@pytest.mark.slow
def test_a_reshape_the_lowering_fixes_at_the_traced_batch_is_caught_and_converted_at_batch_1(tiny, tmp_path):
    import torch

    from optkit.backends.torch import load_module

    module = load_module(open_artifact(tiny["folder"])).eval()  # flatten(1) of a 4x4x4 map: a real RESHAPE
    x = np.load(tiny["eval"])["input"]
    path = tmp_path / "tiny.tflite"
    details = litert.convert_torch(module, (torch.from_numpy(x[:2]),), path, dynamic_batch=True, channels_last=False)
    assert details["batch"] == 1 and "does not run at batch 1" in details["dynamic_batch_failed"]
    assert litert.read_io_specs(path)[0][0].shape == (1, 1, 8, 8)
    source = open_artifact(tiny["folder"])
    runner = litert.LiteRTRunner(Artifact(path=path, format="tflite", inputs=source.inputs, outputs=source.outputs))
    with torch.no_grad():
        ref = module(torch.from_numpy(x[:1])).numpy()
    np.testing.assert_allclose(runner.infer({"input": x[:1]})["logits"], ref, atol=1e-5, rtol=1e-4)


def test_a_tflite_optkit_did_not_write_is_named_by_its_signature(converted, tmp_path):
    foreign = tmp_path / "foreign.tflite"
    shutil.copy(converted["built"]["nchw"][0], foreign)
    art = open_artifact(foreign)
    assert art.format == "tflite" and [s.name for s in art.inputs] == ["args_0"]
    assert art.inputs[0].shape == ("batch", 1, 8, 8) and art.inputs[0].dynamic_batch
    with litert.LiteRTRunner(art) as runner:
        out = runner.infer({"args_0": converted["x"][:3]})
    assert list(out) == ["output_0"] and out["output_0"].shape == (3, 3)
    data = tmp_path / "data.npz"
    np.savez(data, args_0=converted["x"])
    result = invoke("profile", str(foreign), "--eval-data", str(data), "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output


def test_without_the_extra_tflite_exits_2_naming_it(tiny, converted, tmp_path, monkeypatch):
    data = tmp_path / "data.npz"
    np.savez(data, input=converted["x"])
    for name in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    result = invoke("compile", str(tiny["folder"]), "-o", str(tmp_path / "m.tflite"), "--target", "tflite")
    assert result.exit_code == 2 and "optkit[tflite]" in result.output, result.output
    assert not (tmp_path / "m.tflite").exists()
    result = invoke("profile", str(converted["built"]["nchw"][0]), "--eval-data", str(data), "--budget-s", "0.05")
    assert result.exit_code == 2 and "optkit[tflite]" in result.output, result.output
