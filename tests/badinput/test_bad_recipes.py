"""Broken recipes for `optkit run`: refused while validating (exit 2, one error line), nothing run or written."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.helpers import check_case

GOOD_MEASURE = "measure: {batch_sizes: [1], threads: 1, budget_s: 0.05}"


def recipe(model: str = "model: {model}", output_dir: str = "output_dir: out", measure: str = GOOD_MEASURE,
           steps: str = "steps:\n  - export", extra: str = "") -> str:
    return "\n".join(x for x in (model, output_dir, measure, steps, extra) if x) + "\n"


# id -> (recipe text, needles: each a string or a tuple of alternatives)
CASES: dict[str, tuple[str | bytes, tuple]] = {
    "bad-yaml": ("model: [unclosed\nsteps: {{{\n", ("YAML",)),
    "not-a-mapping": ("- export\n- profile\n", ("recipe.yaml",)),
    "empty-file": ("", ("recipe.yaml",)),
    "not-utf8": (b"model: \xff\xfe\xfa\nsteps: [export]\n", ("recipe.yaml",)),
    "unknown-top-level-key": (recipe(extra="modle_name: tiny"), ("modle_name",)),
    "unknown-measure-key": (recipe(measure="measure: {batch_sizes: [1], budget: 0.05}"), ("budget",)),
    "unknown-step-option": (recipe(steps="steps:\n  - export: {opsett: 18}"), ("opsett",)),
    "unknown-step": (recipe(steps="steps:\n  - frobnicate"), ("frobnicate",)),
    "steps-not-a-list": (recipe(steps="steps: export"), ("steps",)),
    "steps-empty": (recipe(steps="steps: []"), ("steps",)),
    "wrong-type-threads": (recipe(measure="measure: {batch_sizes: [1], threads: many, budget_s: 0.05}"), ("threads",)),
    "wrong-type-step-option": (recipe(steps="steps:\n  - export: {opset: eighteen}"), ("opset",)),
    "wrong-type-batch-sizes": (recipe(measure="measure: {batch_sizes: one, budget_s: 0.05}"), ("batch_sizes",)),
    "missing-model": (recipe(model=""), ("model",)),
    "model-path-missing": (recipe(model="model: ./no_such_model_folder"), ("no_such_model_folder",)),
    "model-is-a-junk-file": (recipe(model="model: junk_model.onnx"), ("junk_model.onnx",)),
    "unknown-gate": (recipe(extra="gates:\n  - max_happiness: 3"), ("max_happiness",)),
    "batch-sizes-0": (recipe(measure="measure: {batch_sizes: [0], budget_s: 0.05}"), ("batch_sizes",)),
    "batch-sizes-minus-1": (recipe(measure="measure: {batch_sizes: [-1], budget_s: 0.05}"), ("batch_sizes",)),
    "batch-sizes-100000": (recipe(measure="measure: {batch_sizes: [100000], budget_s: 0.05}"), ("batch_sizes",)),
    "budget-s-0": (recipe(measure="measure: {batch_sizes: [1], budget_s: 0}"), ("budget_s",)),
    "budget-s-minus-1": (recipe(measure="measure: {batch_sizes: [1], budget_s: -1}"), ("budget_s",)),
    "budget-s-inf": (recipe(measure="measure: {batch_sizes: [1], budget_s: .inf}"), ("budget_s",)),
    "budget-s-nan": (recipe(measure="measure: {batch_sizes: [1], budget_s: .nan}"), ("budget_s",)),
    "budget-s-1e9": (recipe(measure="measure: {batch_sizes: [1], budget_s: 1.0e+9}"), ("budget_s",)),
    "threads-minus-1": (recipe(measure="measure: {batch_sizes: [1], threads: -1, budget_s: 0.05}"), ("threads",)),
    "output-dir-is-a-file": (recipe(output_dir="output_dir: out_is_a_file.txt"), ("out_is_a_file.txt",)),
    "two-steps-same-output": (recipe(steps="steps:\n  - export: {output: same.onnx}\n  - simplify: {output: same.onnx}"),
                              ("same.onnx",)),
}


@pytest.mark.parametrize("text,needles", [pytest.param(t, n, id=i) for i, (t, n) in CASES.items()])
def test_broken_recipe(tiny, tmp_path, text, needles):
    path = tmp_path / "recipe.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.replace("{model}", str(tiny["folder"])))
    (tmp_path / "out_is_a_file.txt").write_text("a user's file, not a folder\n")
    (tmp_path / "junk_model.onnx").write_bytes(b"\x08\x07 junk, not a model \xff" * 5)
    check_case(["run", path], 2, needles, tmp_path=tmp_path, watch=[Path(tiny["folder"])], timeout=30)


def test_recipe_that_is_a_directory(tmp_path):
    (tmp_path / "recipe_dir.yaml").mkdir()
    check_case(["run", tmp_path / "recipe_dir.yaml"], 2, ("recipe_dir.yaml",), tmp_path=tmp_path)


@pytest.mark.parametrize("override,needles", [
    pytest.param("measure.budget_s=nan", ("budget_s",), id="set-budget-nan"),
    pytest.param("measure.batch_sizes=[0]", ("batch_sizes",), id="set-batch-sizes-0"),
    pytest.param("no_equals_sign", ("--set",), id="set-without-value"),
    pytest.param("steps.frobnicate.x=1", ("frobnicate",), id="set-unknown-step"),
])
def test_bad_set_override(tiny, tmp_path, override, needles):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe().replace("{model}", str(tiny["folder"])))
    check_case(["run", path, "--set", override], 2, needles, tmp_path=tmp_path, watch=[Path(tiny["folder"])],
               timeout=30)
