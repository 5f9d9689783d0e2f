"""``report.html``: one self-contained page (inline CSS and SVG, no scripts, nothing fetched).

The plot puts every ledger row at (p50 latency, task accuracy) - or output cosine vs the original
when there are no labels - and highlights the Pareto front: the rows no other row beats on both.
"""
from __future__ import annotations

import math
from html import escape
from pathlib import Path

from optkit.report.ledger import HEADERS, _cells

W, H = 760, 420
PAD_L, PAD_R, PAD_T, PAD_B = 70, 30, 50, 55

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px}
.status{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600;font-size:14px}
.passed{background:#dafbe1;color:#116329} .failed{background:#ffebe9;color:#a40e26}
table{border-collapse:collapse;font-size:13px} th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:right}
th{background:#f6f8fa} td.l,th.l{text-align:left} .muted{color:#656d76;font-size:13px}
svg text{font-family:inherit}
"""


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal latency and higher-or-equal score, one strictly."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [round(start, 10)]
    while ticks[-1] < hi - step * 1e-9:  # the last tick reaches or passes hi, so every point is inside
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _plot_points(rows: list[dict]) -> tuple[list[tuple[float, float, dict]], str]:
    with_acc = [r for r in rows if r.get("latency") and r.get("accuracy")]
    if with_acc:
        acc = with_acc[0]["accuracy"]
        if acc.get("points", True):
            return [(r["latency"]["p50_ms"], 100 * r["accuracy"]["value"], r) for r in with_acc], f"{acc['metric']} (%)"
        sign = 1 if acc.get("higher_is_better", True) else -1  # the front wants higher-is-better scores
        return [(r["latency"]["p50_ms"], sign * r["accuracy"]["value"], r) for r in with_acc], \
            acc["metric"] + ("" if sign > 0 else " (negated: lower is better)")
    with_fid = [r for r in rows if r.get("latency") and r.get("fidelity")]
    return [(r["latency"]["p50_ms"], r["fidelity"]["cosine"], r) for r in with_fid], "output cosine vs original"


def _place_label(px: float, py: float, width: float, placed: list) -> tuple[float, float, str]:
    """First spot around a point whose label box overlaps no earlier label (greedy; labels are few)."""
    candidates = [(10, -8), (10, 16), (-10, -8), (-10, 16), (10, -22), (-10, -22), (10, 30), (-10, 30)]
    for dx, dy in candidates:
        left = px + dx if dx > 0 else px + dx - width
        box = (left, py + dy - 11, left + width, py + dy + 3)
        if left >= 0 and box[2] <= W and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                                                  for b in placed):
            placed.append(box)
            return px + dx, py + dy, "start" if dx > 0 else "end"
    return px + 10, py - 8, "start"


def plot_svg(rows: list[dict]) -> str:
    points, y_label = _plot_points(rows)
    if not points:
        return '<p class="muted">No row has both latency and accuracy measured: nothing to plot.</p>'
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_ticks = _nice_ticks(0.0, max(xs) * 1.08)
    y_lo, y_hi = min(ys), max(ys)
    margin = max((y_hi - y_lo) * 0.15, 0.5 if "%" in y_label else 1e-4)
    y_ticks = _nice_ticks(y_lo - margin, min(y_hi + margin, 100.0) if "%" in y_label else y_hi + margin)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return PAD_L + (x - x0) / (x1 - x0) * (W - PAD_L - PAD_R)

    def sy(y: float) -> float:
        return H - PAD_B - (y - y0) / ((y1 - y0) or 1) * (H - PAD_T - PAD_B)

    lat = points[0][2]["latency"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'role="img" aria-label="accuracy vs latency">',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{W - PAD_L - PAD_R}" height="{H - PAD_T - PAD_B}" fill="#fbfcfd" stroke="#d0d7de"/>']
    for t in x_ticks:
        parts.append(f'<line x1="{sx(t):.1f}" y1="{PAD_T}" x2="{sx(t):.1f}" y2="{H - PAD_B}" stroke="#eaeef2"/>'
                     f'<text x="{sx(t):.1f}" y="{H - PAD_B + 18}" font-size="12" text-anchor="middle" fill="#656d76">{t:g}</text>')
    for t in y_ticks:
        parts.append(f'<line x1="{PAD_L}" y1="{sy(t):.1f}" x2="{W - PAD_R}" y2="{sy(t):.1f}" stroke="#eaeef2"/>'
                     f'<text x="{PAD_L - 8}" y="{sy(t) + 4:.1f}" font-size="12" text-anchor="end" fill="#656d76">{t:g}</text>')
    parts.append(f'<text x="{(PAD_L + W - PAD_R) / 2}" y="{H - 12}" font-size="13" text-anchor="middle">'
                 f'p50 latency (ms), batch {lat["batch_size"]}, {lat["threads"] or "default"} thread(s)</text>')
    parts.append(f'<text x="16" y="{(PAD_T + H - PAD_B) / 2}" font-size="13" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(PAD_T + H - PAD_B) / 2})">{escape(y_label)}</text>')
    front = pareto_front([(x, y) for x, y, _ in points])
    if len(front) > 1:  # the front as a staircase: each step is reachable without losing on the other axis
        path = [f"M{sx(points[front[0]][0]):.1f},{sy(points[front[0]][1]):.1f}"]
        for a, b in zip(front, front[1:]):
            path.append(f"H{sx(points[b][0]):.1f}V{sy(points[b][1]):.1f}")
        parts.append(f'<path d="{"".join(path)}" fill="none" stroke="#cf222e" stroke-width="2" stroke-dasharray="6 4"/>')
    placed: list[tuple[float, float, float, float]] = []
    for i, (x, y, row) in enumerate(points):
        on = i in front
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{7 if on else 5}" fill="{"#cf222e" if on else "#8c959f"}" '
                     f'stroke="#fff" stroke-width="1.5"><title>{escape(row["step"])}: {x:.3f} ms, {y:.4g}</title></circle>')
        label = f'{row["index"]} {escape(row["step"])}'
        lx, ly, anchor = _place_label(sx(x), sy(y), 7 * len(label), placed)
        parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="12" text-anchor="{anchor}">{label}</text>')
    lx, ly = W - PAD_R - 175, 14  # the legend sits above the plot area, clear of points near the top
    parts.append(f'<circle cx="{lx}" cy="{ly}" r="6" fill="#cf222e"/><text x="{lx + 12}" y="{ly + 4}" font-size="12">'
                 f'Pareto front</text><circle cx="{lx + 100}" cy="{ly}" r="5" fill="#8c959f"/>'
                 f'<text x="{lx + 111}" y="{ly + 4}" font-size="12">dominated</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _ledger_table(rows: list[dict]) -> str:
    head = "".join(f'<th class="{"l" if i in (1, 2, len(HEADERS) - 1) else ""}">{escape(h)}</th>' for i, h in enumerate(HEADERS))
    body = []
    for row in rows:
        cells = _cells(row)
        body.append("<tr>" + "".join(f'<td class="{"l" if i in (1, 2, len(cells) - 1) else ""}">{escape(c)}</td>'
                                     for i, c in enumerate(cells)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _gates_table(gates: list[dict]) -> str:
    if not gates:
        return '<p class="muted">This recipe has no gates.</p>'
    rows = "".join(f'<tr><td class="l"><span class="status {"passed" if g["passed"] else "failed"}">{"pass" if g["passed"] else "FAIL"}</span></td><td class="l">{escape(g["text"])}</td></tr>'
                   for g in gates)
    return f'<table><thead><tr><th class="l">result</th><th class="l">gate</th></tr></thead><tbody>{rows}</tbody></table>'


def report_html(report: dict) -> str:
    ok = report["status"] == "passed"
    env = report["environment"]
    cpu = env["cpu"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(env["versions"].items()))
    error = f'<p class="failed status">{escape(report["error"])}</p>' if report.get("error") else ""
    cached = f", {len(report['cached_steps'])} step(s) reused from the cache" if report["cached_steps"] else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>optkit report: {escape(Path(report['recipe']).name)}</title>
<style>{_CSS}</style></head><body>
<h1>optkit report: {escape(Path(report['recipe']).name)}</h1>
<p><span class="status {'passed' if ok else 'failed'}">{escape(report['status'])}</span>
<span class="muted">recipe sha256 {report['recipe_sha256'][:16]}…, {report['wall_time_s']:.1f}s{cached}</span></p>
{error}
<h2>Accuracy vs latency</h2>
{plot_svg(report['steps'])}
<h2>Gates</h2>
{_gates_table(report['gates'])}
<h2>Ledger</h2>
{_ledger_table(report['steps']) if report['steps'] else '<p class="muted">No step finished.</p>'}
<h2>Environment</h2>
<p class="muted">{escape(str(cpu.get('model')))} — {cpu.get('logical_cores')} logical cores, {escape(', '.join(cpu.get('simd') or []))};
{escape(env['os'])}; seed {env['seed']}<br>{escape(versions)}</p>
</body></html>
"""
