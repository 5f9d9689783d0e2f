"""optkit compare (interleaved timing) and the optkit.load deployment API."""
from __future__ import annotations

import pytest

import json

import numpy as np
import torch

import optkit
from tests.conftest import invoke


@pytest.mark.slow
def test_compare_two_artifacts(tiny_onnx, tmp_path):
    other = tmp_path / "ort.onnx"
    assert invoke("compile", str(tiny_onnx), "-o", str(other), "--target", "ort-cpu", "--no-measure").exit_code == 0
    result = invoke("compare", str(tiny_onnx), str(other), "--batch-sizes", "1,2", "--budget-s", "0.1", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["artifacts"]
    assert [len(r["latency"]) for r in rows] == [2, 2]
    assert rows[0]["speedup_vs_first"] == [1.0, 1.0]
    assert rows[1]["fidelity_vs_first"]["max_abs_diff"] < 1e-4
    assert rows[0]["accuracy"]["value"] == rows[1]["accuracy"]["value"]


def test_compare_needs_two(tiny_onnx):
    result = invoke("compare", str(tiny_onnx))
    assert result.exit_code == 2


def test_load_numpy_and_torch(tiny, tiny_onnx):
    x = np.load(tiny["eval"])["input"][:3]
    with optkit.load(tiny_onnx) as model:
        a = model(x)
        b = model(torch.from_numpy(x))
        c = model.run({"input": x})["logits"]
    assert a.shape == (3, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
