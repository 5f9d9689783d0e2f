"""A BERT-style encoder as users bring it (transformers, built from a config: nothing downloaded):
the default export keeps batch and sequence dynamic and picks the graph whose attention fuses."""
from __future__ import annotations

import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import FAST, invoke, sidecar

pytest.importorskip("transformers")

ENCODER = textwrap.dedent('''
    import torch
    from transformers import BertConfig, BertModel


    class Encoder(torch.nn.Module):
        """Mean-pooled sentence embedding from a 2-layer BERT (random init from a config)."""

        def __init__(self, attn):
            super().__init__()
            cfg = BertConfig(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, max_position_embeddings=64, attn_implementation=attn)
            self.bert = BertModel(cfg, add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1)


    def build_eager():
        return Encoder("eager").eval()


    def build_sdpa():
        return Encoder("sdpa").eval()
''')


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoder")
    (folder / "model.py").write_text(ENCODER)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 500, size=(16, 24)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::3, 18:] = 0
    np.savez(folder / "eval.npz", input_ids=ids, attention_mask=mask)
    return folder


@pytest.fixture(scope="module")
def export(encoder, tmp_path_factory):
    """``export(attn)``: the encoder with that attention, exported once by `optkit export` for all the tests here."""
    done = {}

    def exported(attn: str):
        if attn not in done:
            out = tmp_path_factory.mktemp(f"export_{attn}") / "e.onnx"
            result = invoke("export", f"{encoder / 'model.py'}:build_{attn}", "--eval-data", str(encoder / "eval.npz"),
                            "-o", str(out), *FAST)
            assert result.exit_code == 0, result.output
            done[attn] = out
        return done[attn]
    return exported


@pytest.mark.slow
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_encoder_exports_with_fusable_attention_and_fuses_it(encoder, export, tmp_path, attn):
    exported, fused = export(attn), tmp_path / "f.onnx"
    data = str(encoder / "eval.npz")
    details = sidecar(exported)["record"]["details"]
    choice = details["exporter_choice"]
    assert choice["chosen"] == details["exporter"]
    assert choice[choice["chosen"]]["attention_fused"] == 2  # every layer's attention fuses from the kept graph
    assert details["dynamic_axes"] == {"input_ids": {"1": "sequence"}, "attention_mask": {"1": "sequence"}}
    simplified = tmp_path / "s.onnx"  # the chain users run: simplification must not cost the attention fusion
    result = invoke("simplify", str(exported), "-o", str(simplified), *FAST)
    assert result.exit_code == 0, result.output
    result = invoke("fuse", str(simplified), "-o", str(fused), *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(fused))
    ops = [n.op_type for n in onnx.load(str(fused)).graph.node]
    assert ops.count("Attention") == 2 and len(ops) < len(onnx.load(str(exported)).graph.node)
    transformer = sidecar(fused)["record"]["details"]["transformer"]
    assert (transformer["num_heads"], transformer["hidden_size"]) == (4, 64)  # detected, not given
    ids, mask = np.load(data)["input_ids"][:4, :10], np.load(data)["attention_mask"][:4, :10]  # another length
    ref = ort.InferenceSession(str(exported)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    got = ort.InferenceSession(str(fused)).run(None, {"input_ids": ids, "attention_mask": mask})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_guard_on_the_encoder_meets_its_budget_in_int8_or_exits_1(encoder, export, tmp_path):
    """The guard on a transformer: int8 recipes before node bisection, and never '✓' with a float model."""
    from tests.conftest import run_cli

    fused, out = tmp_path / "f.onnx", tmp_path / "q.onnx"
    data = str(encoder / "eval.npz")
    assert invoke("fuse", str(export("eager")), "-o", str(fused), "--eval-data", data, "--no-measure").exit_code == 0
    proc = run_cli("quantize", str(fused), "-o", str(out), "--mode", "static", "--calib-from-eval", "--eval-data", data,
                   "--metric", "cosine", "--max-drop", "0.01", "--no-measure", *FAST)
    assert "guard recipe 1 of" in proc.stderr and "compute ops only" in proc.stderr, proc.stderr  # recipes first
    assert "Traceback" not in proc.stderr
    if proc.returncode == 0:
        details = sidecar(out)["record"]["details"]
        nodes, timing = details["nodes"], details["guard"]["p50_ms"]
        assert nodes["quantized"] >= nodes["quantizable"] / 2 and timing["guarded"] < timing["input"]
        assert details["check"]["metric"] == "cosine" and details["check"]["ok"]
        onnx.checker.check_model(str(out))
    else:
        assert proc.returncode == 1 and "error: quantize --max-drop 0.01" in proc.stderr, proc.stderr
        assert "✓ quantize" not in proc.stderr and not out.exists()
