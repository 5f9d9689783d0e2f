"""``optkit run`` as CI uses it, on the shipped digits_cnn recipe: gates and exit codes, the step cache,
reports and manifest, and byte-identical artifacts from a rebuild."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from optkit.types.files import sha256_file
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
    out, report, summary = cold
    assert report["status"] == "passed" and report["cached_steps"] == []
    assert [g["passed"] for g in report["gates"]] == [True] * 4
    assert "max_drift 0.5 on export: measured" in report["gates"][2]["text"]
    assert report["environment"]["seed"] == 0 and report["environment"]["cpu"]["model"]
    assert {"onnxruntime", "torch", "onnx"} <= set(report["environment"]["versions"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe_sha256"] == sha256_file(RECIPE)
    for name in ("00_export.onnx", "03_quantize.onnx", "04_profile.json", "report.json", "report.html", "report.md"):
        assert manifest["files"][name]["sha256"] == sha256_file(out / name), name
    md = (out / "report.md").read_text()
    assert "| 4 | quantize |" in md and "✅" in md
    assert summary.read_text() == md + "\n"  # appended to $GITHUB_STEP_SUMMARY
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Pareto front" in html and "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


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


def test_corrupted_cache_entry_is_rebuilt_never_used(cold):
    out, first, _ = cold
    target = out / "01_simplify.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weights: still a valid ONNX file, different bytes
    target.write_bytes(bytes(data))
    result, report = _run(out)
    assert result.exit_code == 0, result.output
    assert "01_simplify.onnx not reused (its files do not match the sha256" in result.stderr, result.stderr
    assert 1 not in report["cached_steps"] and 0 in report["cached_steps"]
    # the rebuild is byte-identical, so the steps after it are still valid cache entries
    assert report["steps"][2]["sha256"] == first["steps"][2]["sha256"] and 2 in report["cached_steps"]


def test_corrupted_reference_outputs_are_not_reused(cold):
    out, first, _ = cold
    ref = out / "00_export.onnx.optkit-ref.npz"
    ref.write_bytes(ref.read_bytes()[:-16])
    result, report = _run(out)
    assert result.exit_code == 0, result.output
    assert "00_export.onnx not reused (the reference outputs beside it are missing or changed)" in result.stderr
    assert 0 not in report["cached_steps"] and report["steps"][1]["sha256"] == first["steps"][1]["sha256"]


def test_changing_one_option_reruns_that_step_and_the_ones_after(cold):
    out, _, _ = cold
    result, report = _run(out, "--set", "steps.quantize.method=entropy")
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == [0, 1, 2]
    assert report["steps"][4]["artifact"].endswith("03_quantize.onnx")


def test_rebuild_without_cache_is_byte_identical(cold):
    out, first, _ = cold
    result, report = _run(out, "--no-cache")
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == []
    assert [s["sha256"] for s in report["steps"]] == [s["sha256"] for s in first["steps"]]
