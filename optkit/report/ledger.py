"""The ledger: one row per artifact from the original model to the last step, with what changed.

Rows are built from sidecar records (``Artifact.chain()``); the same rows render as a rich table
for people, JSON (``{"steps": [...]}``) and Markdown for machines and pull requests.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from optkit.types.ledger import LedgerRow, Profile
from optkit.types.records import Accuracy, OutputStats, Serving


# ----------------------------------------------------------------------------- formatting

def human_size(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return str(size)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _pts(v: float | None, points: bool = True) -> str:
    if v is None:
        return "—"
    return f"{100 * v:+.2f}" if points else f"{v:+.3g}"


def metric_value(acc: Accuracy | None) -> str:
    """A task metric's value as people read it: a percentage for fractions, else the number."""
    if not acc:
        return "—"
    return _pct(acc.value) if acc.points else f"{acc.value:.4g}"


def metric_text(acc: Accuracy | None) -> str:
    """'99.72% top1', or a dash when no task metric was measured."""
    return f"{metric_value(acc)} {acc.metric}" if acc else "—"


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


def _cells(row: LedgerRow) -> list[str]:
    lat, fid, acc = row.latency, row.fidelity, row.accuracy
    points = acc.points if acc else True
    return [
        str(row.index), row.step, row.format, human_size(row.size_bytes), _count(row.params), _macs(row.macs),
        metric_text(acc), _pts(row.accuracy_delta_vs_parent, points), _pts(row.accuracy_delta_vs_original, points),
        _ms(lat.p50_ms if lat else None), _ms(lat.p90_ms if lat else None),
        _x(row.speedup_vs_parent) + (" SLOWER" if row.slower else ""), _x(row.speedup_vs_original),
        _g(fid.max_abs_diff if fid else None), _g(fid.cosine if fid else None, ".6f"), row.summary,
    ]


HEADERS = ["#", "step", "format", "size", "params", "MACs", "accuracy", "Δ parent", "Δ orig",
           "p50 ms", "p90 ms", "× parent", "× orig", "max|Δ| orig", "cos orig", "what changed"]

# a causal LM's ledger: per-token figures where a fixed model's has accuracy and p50 (which mean nothing there)
GEN_HEADERS = ["#", "step", "format", "size", "params", "perplexity", "Δ ppl orig", "agreement", "TTFT@128 ms",
               "TTFT@512 ms", "decode tok/s", "× parent", "× orig", "what changed"]


def _generative(rows: list[LedgerRow]) -> bool:
    return any(r.generation is not None for r in rows)


def _gen_cells(row: LedgerRow) -> list[str]:
    gen = row.generation
    ttft = [gen.timing_at(n) if gen else None for n in (128, 512)]
    increase = gen.ppl_increase if gen else None
    return [
        str(row.index), row.step, row.format, human_size(row.size_bytes), _count(row.params),
        _g(gen.perplexity if gen else None, ".3f"), "—" if increase is None else f"{100 * increase:+.2f}%",
        _pct(gen.token_agreement if gen else None), *(_g(t.ttft_ms if t else None, ".1f") for t in ttft),
        _g(gen.decode_tokens_per_s if gen else None, ".1f"),
        _x(row.decode_speedup_vs_parent) + (" SLOWER" if row.slower else ""), _x(row.decode_speedup_vs_original),
        row.summary,
    ]


def _gen_caption(rows: list[LedgerRow]) -> str:
    gen = next((r.generation for r in rows if r.generation is not None), None)
    if gen is None:
        return "generation not measured"
    timing = gen.timing_at()
    threads = f"{timing.threads} thread(s), {timing.new_tokens} decode steps a run" if timing else "not timed"
    return (f"perplexity on the evaluation texts ({gen.tokens} next-token predictions), Δ vs the original's; "
            f"agreement: share of the original's greedy tokens reproduced on {gen.prompts} evaluation prompt(s), "
            f"{gen.new_tokens} new tokens each; TTFT: time to first token (p50) after a prompt of 128 / 512 tokens; "
            f"decode tok/s at batch 1 after 128 tokens, {threads}; ×: decode tokens/s vs the parent / original; "
            "figures as measured when each step ran (not interleaved: 'optkit compare' times artifacts together)")


def _timing_caption(rows: list[LedgerRow]) -> str:
    timed = [r for r in rows if r.latency]
    if not timed or timed[0].latency is None:
        return "latency not measured"
    lat = timed[0].latency
    if all(r.timing == "interleaved" for r in timed):
        how = f"latency from one interleaved round-robin pass over all {len(timed)} rows at the end of this run"
    elif any(r.timing == "interleaved" for r in timed):
        how = ("latency from one interleaved pass at the end of this run, except rows "
               + ", ".join(str(r.index) for r in timed if r.timing != "interleaved") + " (measured when built)")
    else:
        how = "latency as measured when each step ran (not side by side: 'optkit compare' times them together)"
    return (f"Δ: task-metric change (points for fractions; the metric's reference is the original model); ×: p50 speedup; max|Δ|, cos: outputs vs the original model's; "
            f"{how}, at batch {lat.batch_size}, {lat.threads or 'default'} thread(s)")


def serving_text(serving: Serving) -> str:
    """One line for a row's serving figures (optkit loadtest ARTIFACT)."""
    cfg = serving.config
    slo = f", p99 SLO {serving.slo_p99_ms:g} ms" if serving.slo_p99_ms is not None else ""
    return (f"served {serving.throughput:.0f} requests/s, p50 {serving.p50_ms:.2f} ms, p99 {serving.p99_ms:.2f} ms "
            f"at {serving.concurrency} clients (max batch {cfg.get('max_batch')}, queue delay "
            f"{cfg.get('max_queue_delay_ms')} ms {cfg.get('batch_policy', 'delay')}, {cfg.get('instances', 1)} x "
            f"{cfg.get('threads', 1)} thread(s); best of {serving.settings_tried} settings{slo}; "
            f"{serving.cpu}; {serving.measured_at})")


def stats_text(stats: list[OutputStats]) -> str:
    """Each output's statistics on the evaluation data, as Polygraphy prints them, so a collapsed output shows:
    'logits mean 0.0123 std 1.05 min -3.2 max 4.1'."""
    parts = []
    for o in stats:
        if o.mean is None:
            parts.append(f"{o.name} (no finite values)" if o.nonfinite_samples else o.name)
            continue
        text = f"{o.name} mean {o.mean:.4g} std {o.std:.4g} min {o.min:.4g} max {o.max:.4g}"
        if o.nonfinite_samples:
            text += f", NaN/inf on {o.nonfinite_samples} sample(s)"
        parts.append(text)
    return "; ".join(parts)


def render_ledger(console: Console, rows: list[LedgerRow], title: str = "optkit ledger") -> None:
    """The table, then one 'what changed' line per step (too long for a column)."""
    gen = _generative(rows)
    headers, cells = (GEN_HEADERS, _gen_cells) if gen else (HEADERS, _cells)
    table = Table(title=title, caption=_gen_caption(rows) if gen else _timing_caption(rows), header_style="bold")
    for i, h in enumerate(headers[:-1]):
        table.add_column(h, justify="left" if i in (1, 2) else "right", no_wrap=True)
    for row in rows:
        table.add_row(*cells(row)[:-1])
    console.print(table)
    for row in rows:
        if row.summary:
            console.print(f"  {row.index} {row.step}: {row.summary}", highlight=False)
        if row.output_stats:
            console.print(f"[dim]    outputs: {stats_text(row.output_stats)}[/]", highlight=False)
        for note in row.notes:
            console.print(f"[dim]    note: {note}[/]")
        if row.serving:
            console.print(f"    {serving_text(row.serving)}", highlight=False)


def ledger_markdown(rows: list[LedgerRow]) -> str:
    gen = _generative(rows)
    headers, cells = (GEN_HEADERS, _gen_cells) if gen else (HEADERS, _cells)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i not in (1, 2, len(headers) - 1) else "---" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in cells(r)) + " |" for r in rows]
    served = [f"- {r.index} {r.step}: {serving_text(r.serving)}" for r in rows if r.serving]
    tail = ("\n\nServing (optkit loadtest):\n" + "\n".join(served)) if served else ""
    stats = [f"- {r.index} {r.step}: {stats_text(r.output_stats)}" for r in rows if r.output_stats]
    tail += ("\n\nOutputs on the evaluation data:\n" + "\n".join(stats)) if stats else ""
    return "\n".join(lines) + f"\n\n_{_gen_caption(rows) if gen else _timing_caption(rows)}._{tail}\n"


def render_profile(console: Console, profile: Profile) -> None:
    acc, fid = profile.accuracy, profile.fidelity
    console.print(f"[bold]{Path(profile.artifact).name}[/] ({profile.format}, {human_size(profile.size_bytes)}"
                  f", peak memory {_g(profile.peak_memory_mb, '.1f')} MB)", highlight=False)
    if acc:
        console.print(f"  {acc.metric}: {metric_value(acc)} on {acc.samples} samples", highlight=False)
    elif fid:
        console.print(f"  drift vs original: max|Δ| {_g(fid.max_abs_diff)}, cosine {fid.cosine:.6f}", highlight=False)
    else:
        console.print("  accuracy: not measured (no labels and no reference outputs)", highlight=False)
    table = Table(header_style="bold")
    for h in ("batch", "threads", "p50 ms", "p90 ms", "p99 ms", "mean ms", "throughput /s", "iterations"):
        table.add_column(h, justify="right")
    for lat in profile.latency:
        table.add_row(str(lat.batch_size), str(lat.threads), _ms(lat.p50_ms), _ms(lat.p90_ms),
                      _ms(lat.p99_ms), _ms(lat.mean_ms), f"{lat.throughput:.1f}", str(lat.iterations))
    console.print(table)
    for note in profile.notes:
        console.print(f"[dim]note: {note}[/]")
