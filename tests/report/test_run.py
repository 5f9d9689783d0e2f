from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from optkit.report.html import pareto_front, report_html
from optkit.report.run import build_report, environment, report_markdown, write_outputs
from optkit.types.ledger import GateResult, RunReport
from optkit.types.records import Fidelity
from tests.engine.test_gates import ROWS
from tests.fakes import fake_engine  # noqa: F401 (fixture)


def test_pareto_front_keeps_rows_nothing_beats():
    points = [(8.0, 99.0), (4.0, 99.0), (2.0, 98.5), (3.0, 98.0), (2.0, 98.5)]
    assert pareto_front(points) == [2, 4, 1]  # (3.0, 98.0) loses to (2.0, 98.5); (8, 99) to (4, 99)


def _report(tmp_path: Path, gates=None, error=None) -> RunReport:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m\nsteps: [export]\n")
    fidelity = Fidelity(max_abs_diff=0.1, cosine=0.99, mean_abs_diff=0.01, min_cosine=0.9)
    rows = [r.model_copy(update={"sha256": "0" * 64, "fidelity": fidelity, "summary": "<b>changed</b>"}) for r in ROWS]
    return build_report(recipe_path=recipe, rows=rows, profiles=[], gates=gates or [], cached=[1], wall_time_s=3.2,
                        env=environment(7, {"onnx": "1"}), error=error)


def test_reports_are_self_contained_and_escaped(tmp_path):
    gates = [GateResult(gate="min_speedup 9", step="quantize", baseline="original", measured=4.0, limit=9,
                        passed=False, text="min_speedup 9 on quantize: measured 4.00x, limit 9x")]
    report = _report(tmp_path, gates)
    assert report.status == "gate failed"
    assert RunReport.model_validate(report.to_json()).to_json() == report.to_json()  # read back as written
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
    assert report.status == "step failed"
    assert "boom" in report_html(report) and "💥" in report_markdown(report)


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


# measures the page as rendered, by data-index: every label's box (the font's real widths), every dot's centre and
# the radius it covers (the winner's ring), every line's ends
GEOMETRY = """<script>
const g = {labels: {}, dots: {}};
for (const t of document.querySelectorAll("svg text.label")) {
  const b = t.getBBox(); g.labels[t.dataset.index] = {box: [b.x, b.y, b.x + b.width, b.y + b.height], text: t.textContent};
}
for (const c of document.querySelectorAll("svg circle.dot"))
  g.dots[c.dataset.index] = [+c.getAttribute("cx"), +c.getAttribute("cy"), +c.getAttribute("r")];
for (const c of document.querySelectorAll("svg circle.winner-ring")) g.dots[c.dataset.index][2] = +c.getAttribute("r");
for (const l of document.querySelectorAll("svg line[data-index]"))
  g.labels[l.dataset.index].line = ["x1", "y1", "x2", "y2"].map(a => +l.getAttribute(a));
document.body.setAttribute("data-geometry", JSON.stringify(g));
</script></body>"""


def _page(kind: str, tmp_path: Path) -> tuple[str, str | None]:
    """(the page, the winner's number on the plot)."""
    if kind == "run":
        return report_html(_report(tmp_path)), None
    from optkit.report.optimize import optimize_html
    from tests.report.test_optimize import CANDIDATES, WINNER, optimize_report

    return optimize_html(optimize_report()), str(1 + [c[0] for c in CANDIDATES].index(WINNER))


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine (apt install chromium)")
@pytest.mark.parametrize("kind", ["run", "optimize"])
def test_report_pages_render_in_headless_chromium(kind, tmp_path):
    """Both pages render without errors; on the plot, as Chromium lays it out, every label is nearer its own dot (its
    edge: the winner's ring) than any other's, or joined to it by a line, and over no other dot; optimize's winner is
    labelled with its own name, beside its own ring."""
    import html as html_lib

    from optkit.report.html import _distance, _overlaps

    text, winner = _page(kind, tmp_path)
    page = tmp_path / "report.html"
    page.write_text(text)
    shot = tmp_path / "shot.png"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1000"]
    proc = subprocess.run([*base, "--enable-logging=stderr", f"--screenshot={shot}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and ":CONSOLE" not in proc.stderr, proc.stderr[-2000:]
    measured = tmp_path / "measured.html"  # the page itself has no scripts: a copy measures it
    measured.write_text(text.replace("</body>", GEOMETRY))
    dom = subprocess.run([*base, "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<svg" in dom and "Pareto front" in dom
    found = re.search(r'data-geometry="([^"]*)"', dom)
    assert found, dom[-2000:]
    geometry = json.loads(html_lib.unescape(found[1]))
    labels, dots = geometry["labels"], geometry["dots"]
    assert labels and set(labels) == set(dots)
    def nearest(index: str, box: list[float]) -> bool:
        x0, y0, r0 = dots[index]
        return all(_distance(box, x0, y0) - r0 < _distance(box, x, y) - r for i, (x, y, r) in dots.items() if i != index)

    for index, label in labels.items():
        line = label.get("line")
        assert nearest(index, label["box"]) or line, (index, label, dots)
        if line:  # from its own dot's centre to its label
            assert line[:2] == pytest.approx(dots[index][:2], abs=0.1) and _distance(label["box"], *line[2:]) < 1
        assert not any(_overlaps(label["box"], (x - r, y - r, x + r, y + r)) for i, (x, y, r) in dots.items()
                       if i != index), (index, label)
    if winner is not None:
        label = labels[winner]
        assert label["text"] == f"{winner} openvino-int8 (winner)" and nearest(winner, label["box"]), (label, dots)


# ----------------------------------------------------------------------------- a recipe run on fake models
# the same properties on the shipped digits_cnn recipe: tests/cli/test_run_ci.py

FAKE_STEPS = "[fake_export, fake, fake, {fake: {cost: 0.5}}, profile]"  # like digits_cnn_cpu.yaml
MET = "[{max_accuracy_drop: 1.0}, {max_size_mb: 2.0}, {max_drift: 0.5, step: fake_export}, {max_drift: 5.0}]"


def test_cold_run_passes_its_gates_and_writes_every_report(fake_engine, tmp_path):
    from tests.report.checks import check_passed_run

    recipe = fake_engine.recipe(FAKE_STEPS, gates=MET)
    summary = tmp_path / "summary.md"
    result, report = fake_engine.run(env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert result.exit_code == 0, result.output
    check_passed_run(fake_engine.out, report, recipe, summary, export="fake_export", last="fake",
                     files=("00_fake_export.fake.json", "03_fake.fake.json", "04_profile.json"))


def test_unmet_gate_exits_3_names_it_and_keeps_the_artifacts(fake_engine):
    fake_engine.recipe(FAKE_STEPS, gates=MET)
    result, report = fake_engine.run("--set", "gates=[{min_speedup: 1000}, {max_accuracy_drop: 1.0}]")
    assert result.exit_code == 3, result.output
    assert "1 of 2 gate(s) failed: min_speedup 1000 on fake vs original: measured" in result.stderr
    assert "limit 1000x" in result.stderr and "Traceback" not in result.stderr
    assert report["status"] == "gate failed" and [g["passed"] for g in report["gates"]] == [False, True]
    assert (fake_engine.out / "03_fake.fake.json").is_file()


# (gate, passes, what its verdict says) on fake_export (a copy) then fake (wrong answers, 3x slower)
VERDICTS = [
    ("{max_accuracy_drop: 1.0}", False, "max_accuracy_drop 1 on fake vs original: measured 100.00 pt, limit 1 pt"),
    ("{max_accuracy_drop: 0, step: fake_export}", True, "on fake_export vs original: measured 0.00 pt"),
    ("{min_cosine: 0.99}", False, "min_cosine 0.99 on fake: measured -1.000"),
    ("{min_cosine: 0.99, step: fake_export}", True, "measured 1.000"),
    ("{max_drift: 0.01, step: fake_export}", True, "max_drift 0.01 on fake_export: measured 0,"),
    ("{min_speedup: 1.0, baseline: fake_export}", False, "on fake vs fake_export: measured 0."),
    ("{max_size_mb: 0.000001}", False, "measured 0.00 MB"),
    ("{max_latency_ms: 1000, batch_size: 2}", True, "at batch 2 on fake: measured"),
    ("{max_latency_ms: 1000, batch_size: 8}", False, "cannot judge, latency at batch 8 was not measured"),
]


def test_gates_judge_what_the_run_measured(fake_engine):
    gates = "[" + ", ".join(g for g, _, _ in VERDICTS) + "]"
    fake_engine.recipe("[fake_export, {fake: {scale: -1, cost: 3}}]", gates=gates, batch_sizes="[1, 2]")
    result, report = fake_engine.run()
    assert result.exit_code == 3, result.output
    assert f"{sum(not p for _, p, _ in VERDICTS)} of {len(VERDICTS)} gate(s) failed" in result.stderr
    for (gate, passed, text), judged in zip(VERDICTS, report["gates"], strict=True):
        assert judged["passed"] is passed and text in judged["text"], (gate, judged["text"])


def test_a_gate_naming_a_step_by_index_judges_that_step(fake_engine):
    """'step: N' is steps[N] of the recipe (as its check says), not ledger row N (row 0 is the original)."""
    fake_engine.recipe("[fake_export, fake]", gates="[{max_drift: 0.5, step: '0'}]")
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    assert report["gates"][0]["step"] == "fake_export", report["gates"][0]["text"]
