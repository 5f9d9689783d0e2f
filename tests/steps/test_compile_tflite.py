"""compile --target tflite end to end: the shipped recipe (digits_cnn, full-integer int8 from the calibration split)
passes its gates and records what it built; compare and report take the .tflite like any artifact; a two-output
model (logits + embedding, global pooling) converts with a dynamic batch and both outputs match torch; what the
target refuses exits 2 with the fix."""
from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

# found, not imported: litert-torch brings JAX into the process, so the import waits for the tests (run last)
if not all(importlib.util.find_spec(m) for m in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")):
    pytest.skip("the LiteRT extra is not installed (pip install 'optkit[tflite]')", allow_module_level=True)

from tests.conftest import FAST, invoke, sidecar  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

TWO_HEADS = textwrap.dedent('''
    import torch
    from torch import nn


    class TwoHeads(nn.Module):
        """Conv features, global pooling, then a classifier and a sigmoid embedding."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            self.classify = nn.Linear(16, 3)
            self.embed = nn.Linear(16, 6)

        def forward(self, x):
            h = self.features(x)
            return self.classify(h), torch.sigmoid(self.embed(h))


    def build():
        return TwoHeads()
''')


@pytest.mark.slow
def test_the_tflite_recipe_passes_its_gates_and_compare_and_report_take_the_artifact(tmp_path):
    recipe = ROOT / "recipes" / "digits_cnn_tflite.yaml"
    raw = yaml.safe_load(recipe.read_text())
    raw["model"] = str((recipe.parent / raw["model"]).resolve())
    raw["output_dir"] = str(tmp_path / "out")
    raw["measure"]["budget_s"] = 0.05
    raw["gates"] = [g for g in raw["gates"] if "min_speedup" not in g]  # speed: benchmarks/tflite.py
    copy = tmp_path / recipe.name
    copy.write_text(yaml.safe_dump(raw))
    result = invoke("run", str(copy), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert all(g["passed"] for g in report["gates"])
    artifact = tmp_path / "out" / "00_compile.tflite"
    details = sidecar(artifact)["record"]["details"]
    assert details["tflite"]["recipe"] == "static_wi8_ai8" and details["tflite"]["batch"] == "dynamic"
    assert details["tflite"]["tflite_io_dtypes"] == {"inputs": ["int8"], "outputs": ["int8"]}
    check = details["check"]
    assert check["ok"] and check["metric"] == "top1" and check["drop"] <= 0.01  # <= 1 point vs torch, eval split
    compared = invoke("compare", str(ROOT / "sample_models" / "digits_cnn"), str(artifact), "--batch-sizes", "1,8",
                      *FAST, "--json")
    assert compared.exit_code == 0, compared.output
    rows = json.loads(compared.stdout)["artifacts"]
    tflite_row = next(r for r in rows if str(r["artifact"]).endswith(".tflite"))
    assert tflite_row["format"] == "tflite" and tflite_row["accuracy"]["value"] >= rows[0]["accuracy"]["value"] - 0.01
    assert {e["batch_size"] for e in tflite_row["latency"]} == {1, 8}
    shown = invoke("report", str(artifact))
    assert shown.exit_code == 0 and "tflite int8" in shown.output


@pytest.mark.slow
def test_a_two_output_model_converts_with_a_dynamic_batch_and_both_outputs_match(tmp_path):
    import torch

    folder = tmp_path / "two_heads"
    folder.mkdir()
    (folder / "model.py").write_text(TWO_HEADS)
    namespace: dict = {}
    exec(compile(TWO_HEADS, "two_heads", "exec"), namespace)
    torch.manual_seed(0)
    net = namespace["build"]().eval()
    torch.save(net.state_dict(), folder / "weights.pt")
    x = np.random.default_rng(0).standard_normal((20, 1, 8, 8)).astype(np.float32)
    np.savez(folder / "eval.npz", input=x)
    (folder / "optkit.yaml").write_text(textwrap.dedent('''
        name: two_heads
        factory: model.py:build
        weights: weights.pt
        inputs: [{name: input, shape: [batch, 1, 8, 8], dtype: float32}]
        outputs: [{name: logits, shape: [batch, 3], dtype: float32}, {name: embedding, shape: [batch, 6], dtype: float32}]
        data: {eval: eval.npz}
    '''))
    out = tmp_path / "two.tflite"
    result = invoke("compile", str(folder), "-o", str(out), "--target", "tflite", "--layout", "nhwc", *FAST)
    assert result.exit_code == 0, result.output
    car = sidecar(out)
    assert car["record"]["details"]["tflite"]["batch"] == "dynamic" and car["runtime"]["layout"] == "nhwc"
    assert [o["name"] for o in car["record"]["outputs"]] == ["logits", "embedding"]
    assert car["record"]["details"]["check"]["max_abs_diff"] < 1e-4  # verified against torch at batch 1 and 8
    import optkit

    with torch.no_grad():
        ref_logits, ref_embedding = net(torch.from_numpy(x[:7]))
    with optkit.load(out) as model:
        got = model(x[:7])
    logits, embedding = (got["logits"], got["embedding"]) if isinstance(got, dict) else got
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(embedding, ref_embedding.numpy(), atol=1e-5, rtol=1e-4)


def test_what_the_tflite_target_refuses(tiny, tiny_onnx, tmp_path):
    for args, words in [
        (["compile", str(tiny["folder"]), "--target", "tflite", "--precision", "bf16"], "does not take --precision bf16"),
        (["compile", str(tiny_onnx), "--target", "tflite"], "torch"),
        (["compile", str(tiny_onnx), "--target", "ort-cpu", "--precision", "int8-dynamic"], "does not take"),
    ]:
        result = invoke(*args, "-o", str(tmp_path / "x.tflite"))
        assert result.exit_code == 2 and words in result.output, (args, result.output)
        assert not (tmp_path / "x.tflite").exists()
