"""The shipped recipes stay valid and run end to end (with a short timing budget)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import invoke

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates(recipe):
    result = invoke("run", str(recipe), "--dry-run")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [r for r in RECIPES if r.stem.endswith("_cpu")], ids=lambda p: p.stem)
def test_cpu_recipe_runs(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())
    raw["model"] = str((recipe.parent / raw["model"]).resolve())
    raw["output_dir"] = str(tmp_path / "out")
    raw["measure"]["budget_s"] = 0.05
    copy = tmp_path / recipe.name
    copy.write_text(yaml.safe_dump(raw))
    result = invoke("run", str(copy), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["step"] for s in report["steps"]] == ["original", "export", "simplify", "fuse", "quantize"]
    original, final = report["steps"][0], report["steps"][-1]
    assert final["accuracy"]["value"] >= original["accuracy"]["value"] - 0.01
    assert final["size_bytes"] < original["size_bytes"]
    assert report["profiles"][0]["latency"][0]["batch_size"] == 1
