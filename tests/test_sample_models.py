"""The bundled sample models: accuracy, size and compute as the README promises, and exact export."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[1] / "sample_models"
EXPECTED = {"digits_cnn": 0.97, "digits_vit": 0.95}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_model_exports_exactly_and_meets_its_accuracy(name, tmp_path):
    folder = ROOT / name
    assert sum(f.stat().st_size for f in folder.iterdir()) < 10 * 2**20
    out = tmp_path / f"{name}.onnx"
    result = invoke("export", str(folder), "-o", str(out), "--budget-s", "0.05")
    assert result.exit_code == 0, result.output
    steps = json.loads(invoke("report", str(out), "--json").stdout)["steps"]
    torch_row, onnx_row = steps
    assert torch_row["accuracy"]["value"] >= EXPECTED[name]
    assert onnx_row["accuracy"]["value"] == torch_row["accuracy"]["value"]  # ONNX top-1 equals torch top-1
    assert torch_row["accuracy"]["samples"] == 360
    if name == "digits_cnn":
        assert torch_row["macs"] >= 20_000_000
