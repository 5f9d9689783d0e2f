from __future__ import annotations

import json
import textwrap

import pytest

from optkit.core.errors import UsageError
from optkit.core.recipe import load_recipe, plan
from tests.conftest import invoke, run_cli


def _write(tmp_path, body: str):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_valid_recipe_plans_outputs_relative_to_the_file(tmp_path, tiny):
    path = _write(tmp_path, f"""
        model: {tiny['folder']}
        output_dir: out
        measure: {{batch_sizes: [1, 2], budget_s: 0.05}}
        steps:
          - export: {{opset: 18}}
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


def test_run_recipe_end_to_end(tmp_path, tiny):
    path = _write(tmp_path, f"""
        model: {tiny['folder']}
        output_dir: out
        measure: {{batch_sizes: [1, 4], budget_s: 0.05}}
        steps:
          - export
          - profile: {{batch_sizes: [1, 2]}}
    """)
    result = invoke("run", str(path), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["step"] for s in report["steps"]] == ["original", "export"]
    assert [lat["batch_size"] for lat in report["profiles"][0]["latency"]] == [1, 2]
    assert [lat["batch_size"] for lat in report["steps"][1]["latency_all"]] == [1, 4]
    assert (tmp_path / "out" / "00_export.onnx").is_file()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["steps"][1]["step"] == "export"


def test_run_bad_recipe_is_exit_2_without_output(tmp_path, tiny):
    path = _write(tmp_path, f"model: {tiny['folder']}\noutput_dir: out\nsteps:\n  - export: {{bogus: 1}}\n")
    proc = run_cli("run", str(path))
    assert proc.returncode == 2 and "bogus" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_step_that_cannot_take_the_format(tmp_path, tiny_onnx):
    path = _write(tmp_path, f"model: {tiny_onnx}\nsteps: [export]\n")
    proc = run_cli("run", str(path))
    assert proc.returncode == 2 and "takes torch models" in proc.stderr


def test_dry_run_prints_the_plan(tmp_path, tiny):
    path = _write(tmp_path, f"model: {tiny['folder']}\nsteps: [export, profile]\n")
    result = invoke("run", str(path), "--dry-run")
    assert result.exit_code == 0
    resolved = json.loads(result.stdout)
    assert [s["step"] for s in resolved["steps"]] == ["export", "profile"]
    assert resolved["steps"][0]["options"]["dynamic_batch"] is True
