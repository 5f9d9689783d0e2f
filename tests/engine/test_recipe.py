from __future__ import annotations

import json
import textwrap

import pytest

from optkit.types.errors import UsageError
from optkit.engine.recipe import load_recipe, plan
from tests.conftest import invoke, run_cli


def _write(tmp_path, body: str):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_valid_recipe_plans_outputs_relative_to_the_file(tmp_path):
    path = _write(tmp_path, """
        model: m
        output_dir: out
        measure: {batch_sizes: [1, 2], budget_s: 0.05}
        steps:
          - export: {opset: 18}
          - profile
    """)
    recipe, base = load_recipe(path)
    steps = plan(recipe, base)
    assert [s.step.name for s in steps] == ["export", "profile"]
    assert steps[0].output == tmp_path / "out" / "00_export.onnx"
    assert steps[0].config.opset == 18 and steps[1].output is None


@pytest.mark.parametrize("body,needle", [
    ("model: m\nsteps: [profile]\nmesure: {}\n", "unknown key 'mesure'"),
    ("model: m\nsteps:\n  - export: {opst: 18}\n", "unknown key 'opst'"),
    ("model: m\nsteps:\n  - exprt\n", "Did you mean 'export'"),
    ("model: m\nsteps: []\n", "steps"),
    ("model: m\nsteps:\n  - export: {opset: nine}\n", "opset"),
    ("model: [unclosed\n", "line 2, column 1"),
    ("- just\n- a list\n", "mapping"),
    ("model: m\nmeasure: {batch_sizes: [0]}\nsteps: [profile]\n", "positive"),
])
def test_broken_recipes_name_the_problem(tmp_path, body, needle):
    path = _write(tmp_path, body)
    with pytest.raises(UsageError) as err:
        recipe, base = load_recipe(path)
        plan(recipe, base)
    assert needle in err.value.one_line()


def test_run_bad_recipe_is_exit_2_without_output(tmp_path):
    path = _write(tmp_path, "model: m\noutput_dir: out\nsteps:\n  - export: {bogus: 1}\n")
    proc = run_cli("run", str(path))
    assert proc.returncode == 2 and "bogus" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_plan(tmp_path):
    path = _write(tmp_path, "model: m\nsteps: [export, profile]\n")
    result = invoke("run", str(path), "--dry-run")
    assert result.exit_code == 0
    resolved = json.loads(result.stdout)
    assert [s["step"] for s in resolved["steps"]] == ["export", "profile"]
    assert resolved["steps"][0]["options"]["dynamic_batch"] is True


def test_unknown_key_names_file_line_column_and_the_fix(tmp_path):
    path = _write(tmp_path, """
        model: m
        steps:
          - export
          - quantize: {mode: static, metod: entropy}
    """)
    proc = run_cli("run", str(path), "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{path}:5:30: unknown key 'metod' in steps[1].options (quantize). Did you mean 'method'?" in proc.stderr


@pytest.mark.parametrize("body,needle", [
    ("model: m\nsteps: [export]\ngates:\n  - {min_speedup: 2, step: quantize}\n", "r.yaml:4:22: gates[0].step: no step 'quantize'"),
    ("model: m\nsteps: [export]\ngates:\n  - {min_speedup: 2, max_size_mb: 1}\n", "exactly one of"),
    ("model: m\nsteps: [export]\ngates:\n  - min_sped: 2\n", "Did you mean 'min_speedup'"),
])
def test_bad_gates_are_usage_errors(tmp_path, body, needle):
    with pytest.raises(UsageError) as err:
        load_recipe(_write(tmp_path, body))
    assert needle in err.value.one_line()


def test_set_overrides_values_by_step_name_or_index(tmp_path):
    path = _write(tmp_path, "model: m\nsteps:\n  - export\n  - quantize: {mode: static}\n")
    recipe, base = load_recipe(path, ["steps.quantize.method=entropy", "steps.0.opset=17", "measure.budget_s=0.2",
                                      "gates=[{min_speedup: 2}]"])
    steps = plan(recipe, base)
    assert steps[1].config.method == "entropy" and steps[1].config.mode == "static" and steps[0].config.opset == 17
    assert recipe.measure.budget_s == 0.2 and recipe.gates[0].min_speedup == 2


@pytest.mark.parametrize("override,needle", [
    ("steps.compile.target=ort-cpu", "no step 'compile'"),
    ("steps.quantize.metod=x", "unknown key 'metod'"),
    ("steps.quantize", "bad --set"),
    ("measure.budget_s=-1", "budget_s"),
])
def test_bad_overrides_are_usage_errors(tmp_path, override, needle):
    path = _write(tmp_path, "model: m\nsteps:\n  - export\n  - quantize: {mode: static}\n")
    with pytest.raises(UsageError) as err:
        load_recipe(path, [override])
    assert needle in err.value.one_line()


def test_json_schema_accepts_every_shipped_recipe_and_rejects_a_typo():
    import jsonschema
    import yaml

    from pathlib import Path

    schema = json.loads(invoke("recipe", "schema").stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for recipe in sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(recipe.read_text())))
        assert not errors, f"{recipe.name}: {errors[0].message}"
    assert list(validator.iter_errors({"model": "m", "steps": [{"quantize": {"metod": "x"}}]}))
    assert list(validator.iter_errors({"model": "m", "steps": ["profile"], "gates": [{"min_speed": 1}]}))
