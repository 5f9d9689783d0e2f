"""``report.html``: one self-contained page (inline CSS and SVG, no scripts, nothing fetched).

The plot puts every ledger row at (p50 latency, task accuracy) - or output cosine vs the original
when there are no labels - and highlights the Pareto front: the rows no other row beats on both. Each dot is
labelled with its row's number (the tables' first column) and name, placed where its own dot is the nearest (a
thin line joins a label that had to move further away); ``optimize``'s winner is ringed and its label placed first.
No emoji: the marks are SVG and CSS, so a machine without an emoji font shows them too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

from optkit.report.ledger import HEADERS, _cells
from optkit.types.ledger import GateResult, LedgerRow, RunReport
from optkit.types.records import Accuracy

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
.winner{display:inline-block;margin-left:6px;padding:0 6px;border:1px solid #d4a72c;border-radius:10px;
background:#fff8c5;color:#7d4e00;font-size:11px;font-weight:600;vertical-align:1px}
tr.best td{background:#fffbe6} .headline{font-size:15px} ul.facts{margin:4px 0;padding-left:20px}
"""

CSS = _CSS  # the run report's style, for the other pages (optimize)


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


@dataclass(frozen=True)
class Dot:
    """One row on the plot (a ledger row, or an optimize candidate): its number and name as the tables show them,
    its p50 and the batch and threads it was timed at, its task metric, its cosine to the original's outputs."""

    index: int
    name: str
    p50_ms: float
    batch_size: int
    threads: int
    accuracy: Accuracy | None
    cosine: float | None


def ledger_dots(rows: list[LedgerRow]) -> list[Dot]:
    return [Dot(r.index, r.step, r.latency.p50_ms, r.latency.batch_size, r.latency.threads, r.accuracy,
                r.fidelity.cosine if r.fidelity else None) for r in rows if r.latency]


def _plot_points(dots: list[Dot]) -> tuple[list[tuple[float, float, Dot]], str]:
    with_acc = [(d, d.accuracy) for d in dots if d.accuracy]
    if with_acc:
        acc = with_acc[0][1]
        if acc.points:
            return [(d.p50_ms, 100 * a.value, d) for d, a in with_acc], f"{acc.metric} (%)"
        sign = 1 if acc.higher_is_better else -1  # the front wants higher-is-better scores
        return [(d.p50_ms, sign * a.value, d) for d, a in with_acc], \
            acc.metric + ("" if sign > 0 else " (negated: lower is better)")
    return [(d.p50_ms, d.cosine, d) for d in dots if d.cosine is not None], "output cosine vs original"


_OFFSETS = [(10, -8), (10, 16), (-10, -8), (-10, 16), (10, -22), (-10, -22), (10, 30), (-10, 30),
            (10, -36), (-10, -36), (10, 44), (-10, 44), (10, -50), (-10, -50), (10, 58), (-10, 58)]
_NEAR = 4  # the first offsets sit right beside the dot; a label further away gets a line to it

Box = tuple[float, float, float, float]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _distance(box: Box, x: float, y: float) -> float:
    dx = max(box[0] - x, 0.0, x - box[2])
    dy = max(box[1] - y, 0.0, y - box[3])
    return math.hypot(dx, dy)


def _place_label(k: int, dots: list[tuple[float, float, float]], width: float,
                 placed: list[Box]) -> tuple[float, float, str, Box, bool]:
    """A spot for dot ``k``'s label: inside the plot's columns, over no other label or dot, and nearer its own dot's
    edge (``dots``: x, y and the radius it covers, a ring included) than any other's; the first such spot around it
    (greedy: labels are few). Where none is, the first spot over no label or dot, else the first inside; ``True``
    last when the label needs a line to its dot."""
    px, py, extent = dots[k]
    spots = []
    for n, (dx, dy) in enumerate(_OFFSETS):
        off = (dx / abs(dx)) * max(abs(dx), extent + 4)  # clear of the dot (and of the winner's ring)
        left = px + off if off > 0 else px + off - width
        box = (left, py + dy - 11, left + width, py + dy + 3)
        if left < PAD_L or box[2] > W or box[1] < 0 or box[3] > H - PAD_B:  # clear of the axes' numbers
            continue
        clear = not any(_overlaps(box, b) for b in placed) and not any(
            _overlaps(box, (x - r - 2, y - r - 2, x + r + 2, y + r + 2)) for x, y, r in dots)
        own = _distance(box, px, py) - extent  # from the edges: a label beside a ring is the ring's
        nearest = all(own < _distance(box, x, y) - r for j, (x, y, r) in enumerate(dots) if j != k)
        spots.append((not (clear and nearest), not clear, n, box, px + off, py + dy, "start" if off > 0 else "end"))
    if not spots:
        return px + 10, py - 8, "start", (px + 10, py - 19, px + 10 + width, py - 5), False
    worse, _, n, box, x, y, anchor = min(spots, key=lambda s: s[:3])
    placed.append(box)
    return x, y, anchor, box, worse or n >= _NEAR


def plot_svg(dots: list[Dot], highlight: int | None = None) -> str:
    """The plot of ``dots`` (ledger rows, or optimize's candidates); ``highlight``: the ``index`` of the dot to ring
    and label first (optimize's winner)."""
    points, y_label = _plot_points(dots)
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

    first = points[0][2]
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
                 f'p50 latency (ms), batch {first.batch_size}, {first.threads or "default"} thread(s)</text>')
    parts.append(f'<text x="16" y="{(PAD_T + H - PAD_B) / 2}" font-size="13" text-anchor="middle" '
                 f'transform="rotate(-90 16 {(PAD_T + H - PAD_B) / 2})">{escape(y_label)}</text>')
    front = pareto_front([(x, y) for x, y, _ in points])
    if len(front) > 1:  # the front as a staircase: each step is reachable without losing on the other axis
        path = [f"M{sx(points[front[0]][0]):.1f},{sy(points[front[0]][1]):.1f}"]
        for a, b in zip(front, front[1:]):
            path.append(f"H{sx(points[b][0]):.1f}V{sy(points[b][1]):.1f}")
        parts.append(f'<path d="{"".join(path)}" fill="none" stroke="#cf222e" stroke-width="2" stroke-dasharray="6 4"/>')
    winner = next((i for i, (_, _, dot) in enumerate(points) if highlight is not None and dot.index == highlight), None)
    radius = [7 if i in front else 5 for i in range(len(points))]
    spots = [(sx(x), sy(y), float(r + (6 if i == winner else 0))) for i, ((x, y, _), r) in enumerate(zip(points, radius))]
    for i, ((x, y, row), (cx, cy, _), r) in enumerate(zip(points, spots, radius)):
        on = i in front
        if i == winner:
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r + 5}" fill="none" stroke="#bf8700" stroke-width="2.5" '
                         f'class="winner-ring" data-index="{row.index}"/>')
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{"#cf222e" if on else "#8c959f"}" '
                     f'stroke="#fff" stroke-width="1.5" class="dot" data-index="{row.index}">'
                     f'<title>{row.index} {escape(row.name)}: {x:.3f} ms, {y:.4g}</title></circle>')
    lx, ly = W - PAD_R - (255 if winner is not None else 175), 14  # above the plot area, clear of points near the top
    placed: list[Box] = [(lx - 8, ly - 10, W, ly + 10)]  # no label over the legend
    order = sorted(range(len(points)), key=lambda i: (i != winner, i not in front, i))
    for i in order:  # the winner's label first, then the front's: they get the spots nearest their dots
        row, (cx, cy, _) = points[i][2], spots[i]
        label = f'{row.index} {row.name}' + (" (winner)" if i == winner else "")
        tx, ty, anchor, box, line = _place_label(i, spots, (7.5 if i == winner else 7) * len(label), placed)
        if line:
            ex, ey = min(max(cx, box[0]), box[2]), min(max(cy, box[1]), box[3])
            parts.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="#8c959f" '
                         f'stroke-width="1" data-index="{row.index}"/>')
        weight = ' font-weight="600"' if i == winner else ""
        parts.append(f'<text x="{tx:.1f}" y="{ty:.1f}" font-size="12"{weight} text-anchor="{anchor}" class="label" '
                     f'data-index="{row.index}">{escape(label)}</text>')
    parts.append(f'<circle cx="{lx}" cy="{ly}" r="6" fill="#cf222e"/><text x="{lx + 12}" y="{ly + 4}" font-size="12">'
                 f'Pareto front</text><circle cx="{lx + 100}" cy="{ly}" r="5" fill="#8c959f"/>'
                 f'<text x="{lx + 111}" y="{ly + 4}" font-size="12">dominated</text>')
    if winner is not None:
        parts.append(f'<circle cx="{lx + 188}" cy="{ly}" r="8" fill="none" stroke="#bf8700" stroke-width="2.5"/>'
                     f'<text x="{lx + 201}" y="{ly + 4}" font-size="12">winner</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _ledger_table(rows: list[LedgerRow]) -> str:
    head = "".join(f'<th class="{"l" if i in (1, 2, len(HEADERS) - 1) else ""}">{escape(h)}</th>' for i, h in enumerate(HEADERS))
    body = []
    for row in rows:
        cells = _cells(row)
        body.append("<tr>" + "".join(f'<td class="{"l" if i in (1, 2, len(cells) - 1) else ""}">{escape(c)}</td>'
                                     for i, c in enumerate(cells)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _gates_table(gates: list[GateResult]) -> str:
    if not gates:
        return '<p class="muted">This recipe has no gates.</p>'
    rows = "".join(f'<tr><td class="l"><span class="status {"passed" if g.passed else "failed"}">{"pass" if g.passed else "FAIL"}</span></td><td class="l">{escape(g.text)}</td></tr>'
                   for g in gates)
    return f'<table><thead><tr><th class="l">result</th><th class="l">gate</th></tr></thead><tbody>{rows}</tbody></table>'


def report_html(report: RunReport) -> str:
    ok = report.status == "passed"
    env = report.environment
    versions = ", ".join(f"{k} {v}" for k, v in sorted(env.versions.items()))
    error = f'<p class="failed status">{escape(report.error)}</p>' if report.error else ""
    cached = f", {len(report.cached_steps)} step(s) reused from the cache" if report.cached_steps else ""
    name = escape(Path(report.recipe).name)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>optkit report: {name}</title>
<style>{_CSS}</style></head><body>
<h1>optkit report: {name}</h1>
<p><span class="status {'passed' if ok else 'failed'}">{escape(report.status)}</span>
<span class="muted">recipe sha256 {report.recipe_sha256[:16]}…, {report.wall_time_s:.1f}s{cached}</span></p>
{error}
<h2>Accuracy vs latency</h2>
{plot_svg(ledger_dots(report.steps))}
<h2>Gates</h2>
{_gates_table(report.gates)}
<h2>Ledger</h2>
{_ledger_table(report.steps) if report.steps else '<p class="muted">No step finished.</p>'}
<h2>Environment</h2>
<p class="muted">{escape(env.cpu_model)} — {env.cores} logical cores, {escape(', '.join(env.simd))};
{escape(env.os)}; seed {env.seed}<br>{escape(versions)}</p>
</body></html>
"""
