"""Compare several artifacts on the same data with the same timing method, interleaved."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from optkit.types.errors import UsageError
from optkit.report.ledger import _ms, _x, human_size, metric_value


def compare_artifacts(refs: list[str], batch_sizes: list[int], threads: int, budget_s: float,
                      eval_path: Path | None, ui, metric: str | None = None, strict: bool = False) -> list[dict[str, Any]]:
    """``metric``: the task metric (``--metric``); reference metrics compare with the first artifact. An artifact
    whose files do not match its sidecar's sha256 is warned about (``strict``: refused, before any measuring)."""
    from rich.markup import escape

    from optkit.engine.setup import probe
    from optkit.backends.opening import open_artifact
    from optkit.backends.integrity import verify_digests
    from optkit.eval.data import load_npz
    from optkit.eval.measure import MeasureSettings, measure_side_by_side, metric_of, outputs_on_data, usable_threads
    from optkit.eval.metrics import fidelity
    from optkit.eval.task_metric import metric_for, resolve_metric

    if len(refs) < 2:
        raise UsageError("compare needs at least two artifacts", hint="Give the baseline first, then the others")
    chosen = resolve_metric(metric, Path.cwd())
    arts = [open_artifact(r) for r in refs]
    _check_same_inputs(arts)
    for art in arts:
        verify_digests(art, lambda text: ui.warn(escape(text)), strict=strict)
    path = eval_path or next((a.data["eval"] for a in arts if a.data.get("eval")), None)
    if path is None:
        raise UsageError("no evaluation data: none of the artifacts records any", hint="Pass --eval-data FILE.npz")
    data = load_npz(path, arts[0].inputs)
    for art in arts:  # a model the data does not fit is a bad input named as such, before anything is measured
        probe(art, data)
    chosen = metric_for(chosen, arts[0].task, data)
    threads = usable_threads(threads, ui.warn)
    settings = MeasureSettings(batch_sizes=tuple(batch_sizes), threads=threads, budget_s=budget_s)
    rows: list[dict[str, Any]] = []
    for art in arts:
        outputs = outputs_on_data(art, data, settings)
        reference = rows[0]["outputs"] if rows else outputs
        rows.append({"artifact": str(art.path), "name": art.path.name, "format": art.format,
                     "runtime": art.runtime, "size_bytes": art.size_bytes(), "outputs": outputs,
                     "accuracy": metric_of(outputs, data, chosen, reference)})
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


def _check_same_inputs(arts) -> None:
    """Every model runs on the same data: their inputs must have the same names (models whose inputs are not
    known before loading, a TorchScript file, are not checked here)."""
    first = [i.name for i in arts[0].inputs]
    for art in arts[1:]:
        names = [i.name for i in art.inputs]
        if first and names and set(names) != set(first):
            raise UsageError(f"{arts[0].path.name} takes inputs [{', '.join(first)}] but {art.path.name} takes "
                             f"[{', '.join(names)}]: compare runs every model on the same data",
                             hint="Compare models of the same inputs (an export, quantization... of the first)")


HEADERS = ["artifact", "format", "size", "metric", "cos vs first", "batch", "p50 ms", "p90 ms", "throughput /s",
           "speedup vs first", "max|Δ| vs first"]


def _lines(rows: list[dict]) -> list[list[str]]:
    out = []
    for row in rows:
        for lat, speed in zip(row["latency"], row["speedup_vs_first"]):
            fid = row["fidelity_vs_first"] or {}
            acc = row["accuracy"]
            out.append([row["name"], row["format"], human_size(row["size_bytes"]),
                        f"{metric_value(acc)} {acc['metric']}" if acc else "—",
                        f"{fid['cosine']:.5f}" if fid.get("cosine") is not None else "—", str(lat["batch_size"]),
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
