"""Compare several artifacts on the same data with the same timing method, interleaved."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from optkit.core.errors import UsageError
from optkit.core.report import _ms, _pct, _x, human_size


def compare_artifacts(refs: list[str], batch_sizes: list[int], threads: int, budget_s: float,
                      eval_path: Path | None, ui) -> list[dict[str, Any]]:
    from optkit.core.artifact import open_artifact
    from optkit.eval.data import load_npz
    from optkit.eval.measure import (MeasureSettings, accuracy_of, measure_side_by_side, outputs_on_data,
                                     usable_threads)
    from optkit.eval.metrics import fidelity

    if len(refs) < 2:
        raise UsageError("compare needs at least two artifacts", hint="Give the baseline first, then the others")
    arts = [open_artifact(r) for r in refs]
    path = eval_path or next((a.data["eval"] for a in arts if a.data.get("eval")), None)
    if path is None:
        raise UsageError("no evaluation data: none of the artifacts records any", hint="Pass --eval-data FILE.npz")
    data = load_npz(path, arts[0].inputs)
    threads = usable_threads(threads, ui.warn)
    settings = MeasureSettings(batch_sizes=tuple(batch_sizes), threads=threads, budget_s=budget_s)
    rows = []
    for art in arts:
        outputs = outputs_on_data(art, data, settings)
        rows.append({"artifact": str(art.path), "name": art.path.name, "format": art.format,
                     "runtime": art.runtime, "size_bytes": art.size_bytes(), "outputs": outputs,
                     "accuracy": accuracy_of(outputs, data, art.task)})
    base_out = rows[0].pop("outputs")
    rows[0]["fidelity_vs_first"] = fidelity(base_out, base_out)
    for row in rows[1:]:
        row["fidelity_vs_first"] = fidelity(row.pop("outputs"), base_out)
    latency = measure_side_by_side(arts, data, settings, on_batch=lambda bs, n: ui.info(
        f"timing {n} artifacts interleaved at batch {bs} ({budget_s}s each)"))
    for row, lat in zip(rows, latency):
        row["latency"] = lat
    for row in rows:
        row["speedup_vs_first"] = [b["p50_ms"] / r["p50_ms"] for b, r in zip(rows[0]["latency"], row["latency"])]
    return rows


HEADERS = ["artifact", "format", "size", "accuracy", "batch", "p50 ms", "p90 ms", "throughput /s", "speedup vs first", "max|Δ| vs first"]


def _lines(rows: list[dict]) -> list[list[str]]:
    out = []
    for row in rows:
        for lat, speed in zip(row["latency"], row["speedup_vs_first"]):
            fid = row["fidelity_vs_first"] or {}
            out.append([row["name"], row["format"], human_size(row["size_bytes"]),
                        _pct(row["accuracy"]["value"]) if row["accuracy"] else "—", str(lat["batch_size"]),
                        _ms(lat["p50_ms"]), _ms(lat["p90_ms"]), f"{lat['throughput']:.1f}", _x(speed),
                        f"{fid.get('max_abs_diff', 0):.2e}"])
    return out


def render_compare(console: Console, rows: list[dict]) -> None:
    table = Table(title="optkit compare (latency measured interleaved)", header_style="bold")
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
    for line in _lines(rows):
        table.add_row(*line)
    console.print(table)


def compare_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(HEADERS))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(line) + " |" for line in _lines(rows)]) + "\n"
