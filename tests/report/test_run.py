from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from optkit.report.html import pareto_front, report_html
from optkit.report.run import build_report, environment, report_markdown, write_outputs
from tests.engine.test_gates import ROWS


def test_pareto_front_keeps_rows_nothing_beats():
    points = [(8.0, 99.0), (4.0, 99.0), (2.0, 98.5), (3.0, 98.0), (2.0, 98.5)]
    assert pareto_front(points) == [2, 4, 1]  # (3.0, 98.0) loses to (2.0, 98.5); (8, 99) to (4, 99)


def _report(tmp_path: Path, gates=None, error=None) -> dict:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\nsteps: [export]\n")
    rows = [dict(r, artifact=f"/x/{r['step']}.onnx", format="onnx", sha256="0" * 64, macs=None, params=None,
                 accuracy_delta_vs_parent=None, accuracy_delta_vs_original=None, speedup_vs_parent=None,
                 speedup_vs_original=None, fidelity={"max_abs_diff": 0.1, "cosine": 0.99, "mean_abs_diff": 0.01,
                                                     "min_cosine": 0.9}, summary="<b>changed</b>", notes=[])
            for r in ROWS]
    return build_report(recipe_path=recipe, rows=rows, profiles=[], gates=gates or [], cached=[1], wall_time_s=3.2,
                        env=environment(7, {"onnx": "1"}), error=error)


def test_reports_are_self_contained_and_escaped(tmp_path):
    gates = [{"gate": "min_speedup 9", "passed": False, "text": "min_speedup 9 on quantize: measured 4.00x, limit 9x"}]
    report = _report(tmp_path, gates)
    assert report["status"] == "gate failed"
    html = report_html(report)
    assert html.count("<circle") >= 3 and "Pareto front" in html and "&lt;b&gt;changed" in html
    assert "<script" not in html and "<link" not in html
    md = report_markdown(report)
    assert "❌ gate failed" in md and "❌ min_speedup 9" in md and "seed 7" in md
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"x")
    (out / ".model.tmp-1.onnx").write_bytes(b"half")
    (out / "notes.txt").write_text("the user's, not optkit's")
    write_outputs(out, report, written=[out / "model.onnx", out / ".model.tmp-1.onnx"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["model.onnx", "report.html", "report.json", "report.md"]


def test_a_failed_step_still_reports(tmp_path):
    report = _report(tmp_path, error="step 'quantize' failed: boom")
    assert report["status"] == "step failed"
    assert "boom" in report_html(report) and "💥" in report_markdown(report)


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine (apt install chromium)")
def test_report_html_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(report_html(_report(tmp_path)))
    shot = tmp_path / "shot.png"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1000"]
    proc = subprocess.run([*base, "--enable-logging=stderr", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and ":CONSOLE" not in proc.stderr, proc.stderr[-2000:]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "<svg" in dom and "Pareto front" in dom
