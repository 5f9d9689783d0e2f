"""distill: a student learns from a teacher; derived, explicit and pruned students; bad pairs refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from optkit.backends.torch import load_module
from optkit.backends.opening import open_artifact
from tests.conftest import FAST, invoke, run_cli, sidecar

NO_MEASURE = ["--no-measure"]


def test_derived_student_learns_the_teacher(tiny_res, tmp_path):
    out = tmp_path / "student"
    result = invoke("distill", "--teacher", str(tiny_res["folder"]), "--student-width", "0.5", "-o", str(out),
                    "--epochs", "3", "--lr", "0.01", "--seed", "0", "--json", *FAST)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["steps"]
    assert [r["step"] for r in rows] == ["original", "distill"]
    assert rows[1]["macs"] < 0.5 * rows[0]["macs"] and rows[1]["params"] < rows[0]["params"]
    details = sidecar(out)["record"]["details"]
    assert details["teacher_macs"] == rows[0]["macs"]
    assert len(details["training"]["history"]) == 4
    module = load_module(open_artifact(out))
    assert module.conv1.weight.shape == (8, 8, 3, 3)
    # the student imitates the teacher: its outputs correlate with the teacher's
    x = torch.from_numpy(np.load(tiny_res["eval"])["input"])
    teacher = load_module(open_artifact(tiny_res["folder"]))
    with torch.no_grad():
        t, s = teacher(x).argmax(1), module(x).argmax(1)
    assert (t == s).float().mean() > 0.5


def test_student_macs_and_features(tiny_res, tmp_path):
    out = tmp_path / "student"
    result = invoke("distill", "--teacher", str(tiny_res["folder"]), "--student-macs", "0.3", "-o", str(out),
                    "--epochs", "1", "--feature-weight", "1.0", "--student-init", "random", *FAST)
    assert result.exit_code == 0, result.output
    row = sidecar(out)["record"]
    assert row["metrics"]["macs"] <= 0.3 * row["details"]["teacher_macs"]
    assert "stem" in row["details"]["feature_pairs"]  # widths differ: bridged by a learned 1x1 projection


def test_explicit_student_factory_and_labels_only_baseline(tiny_res, tmp_path):
    out = tmp_path / "student"
    result = invoke("distill", "--teacher", str(tiny_res["folder"]), "--student", f"{tiny_res['model_py']}:build_res_small",
                    "-o", str(out), "--epochs", "2", "--alpha", "0", *NO_MEASURE)
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((out / "optkit.yaml").read_text())
    assert spec["factory"] == "model.py:build_res_small" and not spec["structure"]
    assert "labels only" in sidecar(out)["record"]["summary"]


def test_pruned_student_in_a_recipe_uses_the_original_as_teacher(tiny_res, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(tiny_res["folder"]), "output_dir": str(tmp_path / "out"),
        "measure": {"batch_sizes": [1], "budget_s": 0.05},
        "steps": [{"prune": {"ratio": 0.5, "round_to": 1}}, {"distill": {"epochs": 2, "lr": 0.01}}, "export"]}))
    result = invoke("run", str(recipe), "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["steps"]
    assert [r["step"] for r in rows] == ["original", "prune", "distill", "export"]
    distilled = sidecar(tmp_path / "out" / "01_distill")["record"]["details"]
    assert distilled["teacher"] == str(tiny_res["folder"].resolve())
    assert rows[2]["accuracy"]["value"] >= rows[1]["accuracy"]["value"]


@pytest.mark.parametrize("args, message", [
    (["--student", "{model_py}:build_res_wrong"], "output shape"),
    (["--student", "nope/missing"], "student nope/missing"),
    ([], "needs a student"),
    (["--student-width", "1.5"], "--student-width"),
    (["--student-width", "0.5", "--student-macs", "0.2"], "one of student"),
])
def test_bad_students_exit_2_and_write_nothing(tiny_res, tmp_path, args, message):
    out = tmp_path / "s"
    args = [a.format(model_py=tiny_res["model_py"]) for a in args]
    result = run_cli("distill", "--teacher", str(tiny_res["folder"]), "-o", str(out), *args, "--epochs", "1", *NO_MEASURE)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
