"""What a passed recipe run leaves behind, checked the same way on fake models (tests/report/test_run.py) and on
the shipped digits_cnn recipe (tests/cli/test_run_ci.py)."""
from __future__ import annotations

import json
from pathlib import Path

from optkit.types.files import sha256_file


def check_passed_run(out: Path, report: dict, recipe: Path, summary: Path, *, files: tuple[str, ...],
                     export: str, last: str) -> None:
    """Every gate passed, the environment recorded, the manifest's digests true, the Markdown appended to
    $GITHUB_STEP_SUMMARY, and a self-contained HTML page with the Pareto plot."""
    assert report["status"] == "passed" and report["cached_steps"] == []
    assert [g["passed"] for g in report["gates"]] == [True] * 4
    assert f"max_drift 0.5 on {export}: measured" in report["gates"][2]["text"]
    assert report["environment"]["seed"] == 0 and report["environment"]["cpu"]["model"]
    assert {"onnxruntime", "torch", "onnx"} <= set(report["environment"]["versions"])  # installed, not imported
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe_sha256"] == sha256_file(recipe)
    for name in (*files, "report.json", "report.html", "report.md"):
        assert manifest["files"][name]["sha256"] == sha256_file(out / name), name
    md = (out / "report.md").read_text()
    assert f"| 4 | {last} |" in md and "✅" in md
    assert summary.read_text() == md + "\n"  # appended to $GITHUB_STEP_SUMMARY
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Pareto front" in html and "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
