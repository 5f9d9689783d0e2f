"""export --dynamic-axis: token models keep batch and sequence dynamic, verified at a second length."""
from __future__ import annotations

import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import FAST, invoke, run_cli, sidecar

TOKENS = textwrap.dedent('''
    import torch
    from torch import nn


    class Tokens(nn.Module):
        """Embedding + a position-wise MLP + mean over the sequence: the shape of a tiny text classifier."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 16)
            self.mlp = nn.Sequential(nn.Linear(16, 16), nn.GELU())
            self.head = nn.Linear(16, 3)

        def forward(self, input_ids, attention_mask):
            h = self.mlp(self.embed(input_ids)) * attention_mask.unsqueeze(-1).float()
            return self.head(h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1).float())


    def build():
        return Tokens()
''')


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    (folder / "model.py").write_text(TOKENS)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=(16, 12)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::3, 9:] = 0
    np.savez(folder / "eval.npz", input_ids=ids, attention_mask=mask)
    return folder


def _seq_dim(path) -> list:
    return [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in onnx.load(str(path)).graph.input]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_token_inputs_get_a_dynamic_sequence_by_default(tokens, tmp_path, exporter):
    out = tmp_path / "m.onnx"
    result = invoke("export", f"{tokens / 'model.py'}:build", "--eval-data", str(tokens / "eval.npz"), "-o", str(out),
                    "--exporter", exporter, *FAST)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(out))
    shapes = _seq_dim(out)
    assert all(isinstance(s[0], str) and isinstance(s[1], str) for s in shapes), shapes  # batch and sequence symbolic
    details = sidecar(out)["record"]["details"]
    assert details["dynamic_axes"] == {"input_ids": {"1": "sequence"}, "attention_mask": {"1": "sequence"}}
    assert "dynamic_axes_checked" in details["verification"]
    sess = ort.InferenceSession(str(out))
    for length in (3, 12, 20):  # shorter and longer than the length it was exported at
        ids = np.arange(2 * length, dtype=np.int64).reshape(2, length) % 50
        got = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        assert got.shape == (2, 3)


@pytest.mark.slow
def test_only_the_batch_when_asked_and_bad_axes_exit_2(tokens, tmp_path):
    out = tmp_path / "m.onnx"
    result = invoke("export", f"{tokens / 'model.py'}:build", "--eval-data", str(tokens / "eval.npz"), "-o", str(out),
                    "--dynamic-axis", "none", "--no-measure")
    assert result.exit_code == 0, result.output
    assert [s[1] for s in _seq_dim(out)] == [12, 12]
    for bad, needle in (("nosuch:1", "no input 'nosuch'"), ("input_ids:5", "has 2 dimensions"), ("input_ids:x", "NAME:DIM")):
        proc = run_cli("export", f"{tokens / 'model.py'}:build", "--eval-data", str(tokens / "eval.npz"),
                       "-o", str(tmp_path / "bad.onnx"), "--dynamic-axis", bad)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "bad.onnx").exists()
