"""``optkit run`` as CI uses it, on the shipped digits_cnn recipe: gates and exit codes, the step cache,
reports and manifest, and byte-identical artifacts from a rebuild. The engine's side of each (what the cache
reuses or rebuilds and why, every gate kind, what the reports hold) is tested in fractions of a second on
fake models: tests/engine/test_cache.py, tests/engine/test_run.py, tests/report/test_run.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "digits_cnn_cpu.yaml"
STEPS = ["export", "simplify", "fuse", "quantize", "profile"]
# machine-independent gates (speed gates are judged on timings; tests must not flake on a loaded machine)
MET = "gates=[{max_accuracy_drop: 1.0}, {max_size_mb: 2.0}, {max_drift: 0.5, step: export}, {max_drift: 5.0}]"

pytestmark = pytest.mark.slow


def _args(out: Path, *extra: str) -> list[str]:
    return ["run", str(RECIPE), "--json", "--set", f"output_dir={out}", "--set", "measure.budget_s=0.05",
            "--set", "measure.batch_sizes=[1]", "--set", MET, *extra]


def _run(out: Path, *extra: str, env: dict | None = None):
    from typer.testing import CliRunner

    from optkit.cli.app import app

    result = CliRunner().invoke(app, _args(out, *extra), env=env)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
    return result, report


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    out = tmp_path_factory.mktemp("ci") / "out"
    summary = out.parent / "summary.md"
    result, report = _run(out, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    return out, report, summary


def test_cold_run_passes_its_gates_and_writes_every_report(cold):
    from tests.report.checks import check_passed_run

    out, report, summary = cold
    check_passed_run(out, report, RECIPE, summary, export="export", last="quantize",
                     files=("00_export.onnx", "03_quantize.onnx", "04_profile.json"))


def test_unchanged_recipe_is_served_from_the_cache(cold):
    out, first, _ = cold
    result, report = _run(out)
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == [0, 1, 2, 3, 4]
    assert "reused" in result.stderr
    assert [s["sha256"] for s in report["steps"]] == [s["sha256"] for s in first["steps"]]
    assert report["profiles"] == first["profiles"]


def test_unmet_gate_exits_3_names_it_and_keeps_the_artifacts(cold):
    out, _, _ = cold
    proc = run_cli(*_args(out, "--set", "gates=[{min_speedup: 1000}, {max_accuracy_drop: 1.0}]"))
    assert proc.returncode == 3, proc.stderr
    assert "1 of 2 gate(s) failed: min_speedup 1000 on quantize vs original: measured" in proc.stderr
    assert "limit 1000x" in proc.stderr and "Traceback" not in proc.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "gate failed" and [g["passed"] for g in report["gates"]] == [False, True]
    assert (out / "03_quantize.onnx").is_file()


def test_rebuild_without_cache_is_byte_identical(cold):
    out, first, _ = cold
    result, report = _run(out, "--no-cache")
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == []
    assert [s["sha256"] for s in report["steps"]] == [s["sha256"] for s in first["steps"]]
