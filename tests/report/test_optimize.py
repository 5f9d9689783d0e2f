"""optimize's reports: numbered as the plot, the winner marked without an emoji, the run report's style, labels
beside their own dots (rendered in headless Chromium in tests/report/test_run.py)."""
from __future__ import annotations

import re

from optkit.report.html import Dot, plot_svg
from optkit.report.optimize import HEADERS, optimize_html, optimize_markdown
from optkit.report.run import environment
from optkit.types.optimize_report import OptimizeReport
from optkit.types.records import Accuracy

TOP1 = {"metric": "top1", "value": 0.9972, "samples": 360, "points": True, "higher_is_better": True}
# crowded on purpose: three int8 candidates within 0.02 ms of each other at the same accuracy, the winner among them
CANDIDATES = [("ort-fp32", 1.40, 0.9972), ("ort-int8-static", 0.45, 0.9972), ("ort-int8-static-entropy", 0.46, 0.9972),
              ("openvino-fp32", 1.38, 0.9972), ("openvino-int8", 0.44, 0.9972), ("openvino-int8-accuracy", 0.47, 0.9944)]
WINNER = "openvino-int8"


def optimize_report(winner: str | None = WINNER) -> OptimizeReport:
    """An optimize report.json as optkit writes it (optkit.report.optimize.optimize_report), read back, without a
    search."""
    candidates = [{"name": name, "target": "ort-cpu", "precision": "int8", "what": f"what {name} is",
                   "status": "built", "why": None, "steps": [], "artifact": f"/x/{name}.onnx",
                   "metric": {**TOP1, "value": acc}, "drop_vs_original": 0.0, "cosine_vs_original": 0.9999,
                   "calibration_drop": 0.0, "verdicts": [], "p50_ms": p50, "p90_ms": p50 * 1.2,
                   "speedup_vs_fp32": 1.41 / p50, "speedup_vs_original": 7.2 / p50, "timing_pass": 1,
                   "size_bytes": 700_000, "seconds": 3.0, "cached": False} for name, p50, acc in CANDIDATES]
    return OptimizeReport.model_validate({"model": "/m/digits_cnn", "status": "passed" if winner else "no candidate within budget",
            "winner": winner, "budget": {"max_drop": None, "min_cosine": None}, "batch_size": 1, "threads": 1,
            "timing": "one pass", "timing_reused_from": None,
            "judged_on": "the calibration split (its 200 samples, /m/calib.npz) and the evaluation split",
            "calibration_samples": 200, "fp32": {"artifact": "/x/fp32.onnx", "p50_ms": 1.41, "p90_ms": 1.6},
            "original": {"artifact": "/m/digits_cnn", "format": "torch", "same_as_fp32": False, "p50_ms": 7.2,
                         "p90_ms": 8.0, "not_timed": None},
            "candidates": candidates, "skipped": [{"name": "ort-fp16", "why": "no fast fp16 path"}],
            "facts": {}, "time_budget_s": 600.0, "build_time_s": 41.5, "wall_time_s": 52.3,
            "environment": environment(0, {"onnx": "1"}).to_json(), "executor": "local", "measured_on": [], "timeline": []})


def test_the_tables_number_rows_as_the_plot_and_mark_the_winner_in_text():
    report = optimize_report()
    md = optimize_markdown(report)
    assert "🏆" not in md and f"| 5 | {WINNER} **(winner)** |" in md and "| 7 | ort-fp16 | not built |" in md
    assert md.count("\n| ") == len(CANDIDATES) + 2  # header + rows (the separator starts with "|-")
    assert "3.20x the fp32 ONNX model and 16.36x the original torch model (digits_cnn)" in md
    assert "candidates built in 42s of the 600s time budget (--time-budget), 52s in all" in md
    html = optimize_html(report)
    assert "🏆" not in html and '<span class="winner">winner</span>' in html and "<style>" in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    first_cells = re.findall(r"<tr(?: class='best')?><td class=\"\">(\d+)</td><td class=\"l\">([^<]+)", html)
    assert [(int(i), name) for i, name in first_cells] == [(i, n) for i, (n, _, _) in enumerate(CANDIDATES, 1)] + [
        (len(CANDIDATES) + 1, "ort-fp16")]
    for i, (name, _, _) in enumerate(CANDIDATES, 1):  # each dot and its label carry the table's number
        assert re.search(rf'class="dot" data-index="{i}"><title>{i} {name}:', html), name
        assert re.search(rf'class="label" data-index="{i}">{i} {name}', html), name
    assert 'class="winner-ring" data-index="5"' in html and f">5 {WINNER} (winner)</text>" in html
    assert len(HEADERS) == 12 and HEADERS[0] == "#"


def test_no_winner_is_said_and_nothing_is_ringed():
    report = optimize_report(winner=None)
    assert "No candidate is within the budget" in optimize_markdown(report)
    html = optimize_html(report)
    assert "winner-ring" not in html and 'class="winner"' not in html and "status failed" in html


def _boxes(svg: str) -> tuple[dict, dict]:
    """Each label's estimated box (as the placement computes it) and each dot's centre and the radius it covers (the
    winner's ring), by data-index."""
    dots = {m[3]: (float(m[0]), float(m[1]), float(m[2])) for m in re.findall(
        r'<circle cx="([\d.]+)" cy="([\d.]+)" r="(\d+)" fill="[^"]+" stroke="#fff" stroke-width="1.5" class="dot" '
        r'data-index="(\d+)"', svg)}
    for x, y, r, index in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="(\d+)" fill="none" stroke="#bf8700" '
                                     r'stroke-width="2.5" class="winner-ring" data-index="(\d+)"', svg):
        dots[index] = (float(x), float(y), float(r))
    labels = {}
    for x, y, anchor, index, text in re.findall(r'<text x="([\d.]+)" y="([\d.]+)" font-size="12"[^>]*text-anchor="'
                                                r'(start|end)" class="label" data-index="(\d+)">([^<]+)</text>', svg):
        width = 7 * len(text)
        left = float(x) if anchor == "start" else float(x) - width
        labels[index] = (left, float(y) - 11, left + width, float(y) + 3)
    return labels, dots


def test_crowded_labels_sit_nearest_their_own_dots_or_are_joined_to_them():
    """The label placement itself (the rendered page is checked in Chromium): no label over another dot, each nearer
    its own dot's edge than any other's or joined to it by a line (dots 0.01 ms apart overlap: no spot is nearest the
    middle one), and the winner's, placed first, always beside its own ring."""
    from optkit.report.html import _distance, _overlaps

    rows = [Dot(i, name, p50, 1, 1, Accuracy.model_validate({**TOP1, "value": acc}), None)
            for i, (name, p50, acc) in enumerate(CANDIDATES, 1)]
    svg = plot_svg(rows, highlight=5)
    labels, dots = _boxes(svg)
    lines = set(re.findall(r'<line x1="[\d.]+" y1="[\d.]+" x2="[\d.]+" y2="[\d.]+" stroke="#8c959f" stroke-width="1" '
                           r'data-index="(\d+)"', svg))
    assert set(labels) == set(dots) == {str(i) for i in range(1, len(CANDIDATES) + 1)}
    for index, box in labels.items():
        x0, y0, r0 = dots[index]
        nearest = all(_distance(box, x0, y0) - r0 < _distance(box, x, y) - r
                      for other, (x, y, r) in dots.items() if other != index)
        assert nearest or index in lines, index
        assert not any(_overlaps(box, (x - r, y - r, x + r, y + r)) for other, (x, y, r) in dots.items()
                       if other != index), index
    assert "5" not in lines and all(not _overlaps(a, b) for i, a in labels.items() for j, b in labels.items() if i < j)


def test_a_folder_whose_report_is_not_optkits_is_refused(tmp_path):
    """`optkit report DIR` reads report.json only as far as it must, and says what is wrong with exit 2."""
    from tests.conftest import invoke

    for text, needle in (("{not json", "unreadable"), ('{"steps": 3}', "not a report optkit wrote"),
                         ('{"candidates": [], "model": 1}', "not an optimize report this optkit can read"),
                         ('{"recipe": "r.yaml", "steps": [{"artifact": "/nowhere/m.onnx", "sha256": "0"}]}',
                          "gone or changed since its report")):
        folder = tmp_path / str(len(text))
        folder.mkdir()
        (folder / "report.json").write_text(text)
        result = invoke("report", str(folder))
        assert result.exit_code == 2 and needle in result.output, (text, result.output)
