"""``optkit compare``'s table (Markdown, or rich in a terminal) of the rows ``engine/compare.py`` measured."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from optkit.types.ledger import CompareRow
from optkit.report.ledger import _ms, _x, human_size, metric_text


HEADERS = ["artifact", "format", "size", "metric", "cos vs first", "batch", "p50 ms", "p90 ms", "throughput /s",
           "speedup vs first", "max|Δ| vs first"]


def _lines(rows: list[CompareRow]) -> list[list[str]]:
    out = []
    for row in rows:
        fid = row.fidelity_vs_first
        for lat, speed in zip(row.latency, row.speedup_vs_first):
            out.append([row.name, row.format, human_size(row.size_bytes), metric_text(row.accuracy),
                        f"{fid.cosine:.5f}" if fid else "—", str(lat.batch_size),
                        _ms(lat.p50_ms), _ms(lat.p90_ms), f"{lat.throughput:.1f}", _x(speed),
                        f"{fid.max_abs_diff if fid else 0:.2e}"])
    return out


def render_compare(console: Console, rows: list[CompareRow]) -> None:
    table = Table(title="optkit compare (latency measured interleaved)", header_style="bold")
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
    for line in _lines(rows):
        table.add_row(*line)
    console.print(table)


def compare_markdown(rows: list[CompareRow]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADERS))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in _lines(rows)]) + "\n"
