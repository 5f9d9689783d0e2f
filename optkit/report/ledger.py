"""The ledger: one row per artifact from the original model to the last step, with what changed.

Rows are built from sidecar records (``Artifact.chain()``); the same rows render as a rich table
for people, JSON (``{"steps": [...]}``) and Markdown for machines and pull requests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from optkit.types.records import Latency, Metrics, StepRecord


def _acc(rec: StepRecord) -> float | None:
    acc = rec.measured.accuracy
    return acc.value if acc else None


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _speedup(lat: Latency | None, other: Metrics) -> float | None:
    if lat is None:
        return None
    base = other.latency_at(lat.batch_size, lat.threads)
    return base.p50_ms / lat.p50_ms if base and lat.p50_ms > 0 else None


SLOWER_STEPS = ("quantize", "compile")  # steps whose point is speed: slower than their input is flagged
_LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "throughput", "batch_size", "threads")


def with_latency(chain: list[StepRecord], latency: list | None) -> list[tuple[StepRecord, Metrics, str]]:
    """Each record with the metrics the ledger shows: latency replaced by ``latency`` (one entry list per row,
    from one interleaved pass) where given, and which timing that is."""
    out = []
    for i, rec in enumerate(chain):
        lat = latency[i] if latency is not None and i < len(latency) else None
        if lat:
            metrics = rec.measured.model_copy(update={"latency": [Latency.model_validate(e) for e in lat]})
            out.append((rec, metrics, "interleaved"))
        else:
            out.append((rec, rec.measured, "step time"))
    return out


def ledger_rows(chain: list[StepRecord], latency: list | None = None) -> list[dict[str, Any]]:
    """Ledger rows (the JSON view of the chain) from the original model to the last artifact. ``latency``: the
    run's interleaved timing of every row (``RunResult.ledger_latency``); without it, each row's step-time figures."""
    timed = with_latency(chain, latency)
    rows: list[dict[str, Any]] = []
    for i, (rec, metrics, timing) in enumerate(timed):
        parent = timed[i - 1] if i else None
        original = timed[0]
        lat = metrics.latency_at()
        acc, fid = metrics.accuracy, metrics.fidelity
        row = {
            "index": i, "step": rec.step, "artifact": rec.artifact, "format": rec.format,
            "size_bytes": rec.size_bytes, "sha256": rec.sha256,
            "accuracy": {"metric": acc.metric, "value": acc.value, "samples": acc.samples, "points": acc.points,
                         "higher_is_better": acc.higher_is_better} if acc else None,
            "accuracy_delta_vs_parent": _delta(_acc(rec), _acc(parent[0])) if parent else None,
            "accuracy_delta_vs_original": _delta(_acc(rec), _acc(original[0])),
            "latency": {k: getattr(lat, k) for k in _LATENCY_KEYS} if lat else None,
            "latency_all": [e.to_json() for e in metrics.latency or []],
            "speedup_vs_parent": _speedup(lat, parent[1]) if parent else None,
            "speedup_vs_original": _speedup(lat, original[1]),
            "fidelity": {k: getattr(fid, k) for k in ("max_abs_diff", "mean_abs_diff", "cosine", "min_cosine")} if fid else None,
            "fidelity_vs_parent": metrics.fidelity_parent.to_json() if metrics.fidelity_parent else None,
            "peak_memory_mb": metrics.peak_memory_mb,
            "macs": metrics.macs,
            "params": metrics.params,
            "wall_time_s": rec.wall_time_s,
            "summary": rec.summary,
            "notes": list(rec.notes),
            "timing": timing,
            "serving": metrics.serving.to_json() if metrics.serving else None,
            "output_stats": [o.to_json() for o in metrics.output_stats] if metrics.output_stats else None,
        }
        if parent and rec.step in SLOWER_STEPS and row["speedup_vs_parent"] is not None and row["speedup_vs_parent"] < 1.0:
            row["slower"] = True
            how = "interleaved" if timing == "interleaved" and parent[2] == "interleaved" else "at step time"
            row["notes"].append(f"SLOWER than its input: {row['speedup_vs_parent']:.2f}x its speed (p50, measured {how})")
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- formatting

def human_size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _pts(v: float | None, points: bool = True) -> str:
    if v is None:
        return "—"
    return f"{100 * v:+.2f}" if points else f"{v:+.3g}"


def metric_value(acc: dict | None) -> str:
    """A task metric's value as people read it: a percentage for fractions, else the number."""
    if not acc:
        return "—"
    return _pct(acc["value"]) if acc.get("points", True) else f"{acc['value']:.4g}"


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _g(v: float | None, fmt: str = ".2e") -> str:
    return "—" if v is None else format(v, fmt)


def _macs(v: int | None) -> str:
    return "—" if v is None else f"{v / 1e6:.1f} M"


def _count(v: int | None) -> str:
    return "—" if v is None else (f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.0f} k")


def _cells(row: dict) -> list[str]:
    lat = row["latency"] or {}
    fid = row["fidelity"] or {}
    acc = row["accuracy"]
    points = acc.get("points", True) if acc else True
    return [
        str(row["index"]), row["step"], row["format"], human_size(row["size_bytes"]), _count(row.get("params")), _macs(row["macs"]),
        f"{metric_value(acc)} {acc['metric']}" if acc else "—",
        _pts(row["accuracy_delta_vs_parent"], points), _pts(row["accuracy_delta_vs_original"], points),
        _ms(lat.get("p50_ms")), _ms(lat.get("p90_ms")),
        _x(row["speedup_vs_parent"]) + (" SLOWER" if row.get("slower") else ""), _x(row["speedup_vs_original"]),
        _g(fid.get("max_abs_diff")), _g(fid.get("cosine"), ".6f"), row["summary"],
    ]


HEADERS = ["#", "step", "format", "size", "params", "MACs", "accuracy", "Δ parent", "Δ orig",
           "p50 ms", "p90 ms", "× parent", "× orig", "max|Δ| orig", "cos orig", "what changed"]


def _timing_caption(rows: list[dict]) -> str:
    lat = next((r["latency"] for r in rows if r["latency"]), None)
    if not lat:
        return "latency not measured"
    timed = [r for r in rows if r["latency"]]
    if all(r.get("timing") == "interleaved" for r in timed):
        how = f"latency from one interleaved round-robin pass over all {len(timed)} rows at the end of this run"
    elif any(r.get("timing") == "interleaved" for r in timed):
        how = ("latency from one interleaved pass at the end of this run, except rows "
               + ", ".join(str(r["index"]) for r in timed if r.get("timing") != "interleaved") + " (measured when built)")
    else:
        how = "latency as measured when each step ran (not side by side: 'optkit compare' times them together)"
    return (f"Δ: task-metric change (points for fractions; the metric's reference is the original model); ×: p50 speedup; max|Δ|, cos: outputs vs the original model's; "
            f"{how}, at batch {lat['batch_size']}, {lat['threads'] or 'default'} thread(s)")


def serving_text(serving: dict) -> str:
    """One line for a row's serving figures (optkit loadtest ARTIFACT)."""
    cfg = serving.get("config", {})
    slo = f", p99 SLO {serving['slo_p99_ms']:g} ms" if serving.get("slo_p99_ms") is not None else ""
    return (f"served {serving['throughput']:.0f} requests/s, p50 {serving['p50_ms']:.2f} ms, p99 {serving['p99_ms']:.2f} ms "
            f"at {serving.get('concurrency')} clients (max batch {cfg.get('max_batch')}, queue delay "
            f"{cfg.get('max_queue_delay_ms')} ms {cfg.get('batch_policy', 'delay')}, {cfg.get('instances', 1)} x "
            f"{cfg.get('threads', 1)} thread(s); best of {serving.get('settings_tried')} settings{slo}; "
            f"{serving.get('cpu')}; {serving.get('measured_at')})")


def stats_text(stats: list[dict]) -> str:
    """Each output's statistics on the evaluation data, as Polygraphy prints them, so a collapsed output shows:
    'logits mean 0.0123 std 1.05 min -3.2 max 4.1'."""
    parts = []
    for o in stats:
        if o.get("mean") is None:
            parts.append(f"{o['name']} (no finite values)" if o.get("nonfinite_samples") else o["name"])
            continue
        text = f"{o['name']} mean {o['mean']:.4g} std {o['std']:.4g} min {o['min']:.4g} max {o['max']:.4g}"
        if o.get("nonfinite_samples"):
            text += f", NaN/inf on {o['nonfinite_samples']} sample(s)"
        parts.append(text)
    return "; ".join(parts)


def render_ledger(console: Console, rows: list[dict], title: str = "optkit ledger") -> None:
    """The table, then one 'what changed' line per step (too long for a column)."""
    table = Table(title=title, caption=_timing_caption(rows), header_style="bold")
    for i, h in enumerate(HEADERS[:-1]):
        table.add_column(h, justify="left" if i in (1, 2) else "right", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row)[:-1])
    console.print(table)
    for row in rows:
        if row["summary"]:
            console.print(f"  {row['index']} {row['step']}: {row['summary']}", highlight=False)
        if row.get("output_stats"):
            console.print(f"[dim]    outputs: {stats_text(row['output_stats'])}[/]", highlight=False)
        for note in row["notes"]:
            console.print(f"[dim]    note: {note}[/]")
        if row.get("serving"):
            console.print(f"    {serving_text(row['serving'])}", highlight=False)


def ledger_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---:" if i not in (1, 2, len(HEADERS) - 1) else "---" for i in range(len(HEADERS))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    served = [f"- {r['index']} {r['step']}: {serving_text(r['serving'])}" for r in rows if r.get("serving")]
    tail = ("\n\nServing (optkit loadtest):\n" + "\n".join(served)) if served else ""
    stats = [f"- {r['index']} {r['step']}: {stats_text(r['output_stats'])}" for r in rows if r.get("output_stats")]
    tail += ("\n\nOutputs on the evaluation data:\n" + "\n".join(stats)) if stats else ""
    return "\n".join(lines) + f"\n\n_{_timing_caption(rows)}._{tail}\n"


def render_profile(console: Console, profile: dict) -> None:
    acc = profile.get("accuracy")
    fid = profile.get("fidelity")
    console.print(f"[bold]{Path(profile['artifact']).name}[/] ({profile['format']}, {human_size(profile['size_bytes'])}"
                  f", peak memory {_g(profile.get('peak_memory_mb'), '.1f')} MB)", highlight=False)
    if acc:
        console.print(f"  {acc['metric']}: {metric_value(acc)} on {acc['samples']} samples", highlight=False)
    elif fid:
        console.print(f"  drift vs original: max|Δ| {_g(fid['max_abs_diff'])}, cosine {fid['cosine']:.6f}", highlight=False)
    else:
        console.print("  accuracy: not measured (no labels and no reference outputs)", highlight=False)
    table = Table(header_style="bold")
    for h in ("batch", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "throughput /s", "iterations"):
        table.add_column(h, justify="right")
    for lat in profile.get("latency") or []:
        table.add_row(str(lat["batch_size"]), str(lat["threads"]), _ms(lat["p50_ms"]), _ms(lat["p90_ms"]),
                      _ms(lat["p99_ms"]), _ms(lat["mean_ms"]), f"{lat['throughput']:.1f}", str(lat["iterations"]))
    console.print(table)
    for note in profile.get("notes") or []:
        console.print(f"[dim]note: {note}[/]")
