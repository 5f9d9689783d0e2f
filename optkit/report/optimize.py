"""What ``optkit optimize`` leaves in its output folder.

- ``best.onnx`` / ``best.xml`` + ``best.bin``: a copy of the winner with its sidecar (the ledger, its paths the
  copy's: ``optkit report DIR/best.onnx``), and ``best.yaml``: the recipe that rebuilds it from MODEL with
  ``optkit run`` into ``DIR/best/``, where optimize already ran it: every step comes from the cache.
- ``report.json`` / ``report.md`` / ``report.html``: the winner's speed-up vs the fp32 ONNX model and vs the original
  model (timed in the same pass), every candidate with its status, why it was rejected or skipped, its metric drop
  and cosine vs the original, p50/p90 from the one interleaved pass, size, and the accuracy-vs-latency Pareto
  front (numbered as the table); the time budget and the time used; the CPU and its flags.
- ``candidates/NAME/``: each candidate's artifacts and sidecars (the step cache for a rerun).
"""
from __future__ import annotations

from html import escape
from pathlib import Path

import yaml

from optkit.optimize.best import copy_artifact
from optkit.optimize.judge import CALIB_SAMPLES
from optkit.optimize.model import Outcome, Search
from optkit.optimize.timing import FINALIST_SPAN
from optkit.engine.versions import tool_versions
from optkit.report.ledger import human_size
from optkit.report.run import environment
from optkit.types.files import Staging, dumps_json
from optkit.types.optimize_report import Best, Candidate, Fp32, OptimizeReport, Original, Skipped


def _row(o: Outcome) -> Candidate:
    c = o.candidate
    calibration = o.verdict("calibration")
    return Candidate(
        name=c.name, target=c.target, precision=c.precision, what=c.what, status=o.status, why=o.why,
        steps=o.recipe_steps(), artifact=str(o.artifact.path) if o.artifact else None,
        metric=o.record.measured.accuracy if o.record else None, drop_vs_original=o.drop,
        cosine_vs_original=o.cosine, calibration_drop=calibration.drop if calibration else None,
        verdicts=[v.to_json() for v in o.verdicts], p50_ms=o.p50_ms, p90_ms=o.p90_ms, speedup_vs_fp32=o.speedup,
        speedup_vs_original=o.speedup_vs_original, timing_pass=o.timing_pass,
        size_bytes=o.record.size_bytes if o.record else None, seconds=round(o.seconds, 2), cached=o.cached)


def _original(search: Search, model: str) -> Original:
    if not search.prefix:  # MODEL is the fp32 ONNX model: the same figures
        return Original(artifact=model, format="onnx", same_as_fp32=True, p50_ms=search.baseline_p50_ms,
                        p90_ms=search.baseline_p90_ms, not_timed=None)
    fmt = search.original.format if search.original is not None else "torch"
    why = search.original_not_timed or (None if search.original_p50_ms is not None else "it was not in the timing pass")
    return Original(artifact=model, format=fmt, same_as_fp32=False, p50_ms=search.original_p50_ms,
                    p90_ms=search.original_p90_ms, not_timed=why)


def _judged_on(search: Search) -> str:
    if not search.calib_data:
        return "the evaluation split"
    n = search.calib_samples
    count = "" if n is None else (f"its first {n} samples, " if n >= CALIB_SAMPLES else f"its {n} samples, ")
    return f"the calibration split ({count}{search.calib_data}) and the evaluation split"


def _timing_text(search: Search) -> str:
    return (f"the fp32 model{', the original model' if search.original is not None else ''} and every "
            f"candidate within budget in one interleaved round-robin pass at batch "
            f"{search.batch_size}, then the finalists (within {FINALIST_SPAN}x of the fastest) again with the "
            f"fp32 model; each ratio comes from one pass"
            + (f" (timings reused from the pass measured at {search.timing_reused_from}: every candidate came "
               f"from the cache, same data, CPU and settings; --retime measures again)"
               if search.timing_reused_from else ""))


def optimize_report(search: Search, model: str) -> OptimizeReport:
    return OptimizeReport(
        model=model, status="passed" if search.winner else "no candidate within budget",
        winner=search.winner.name if search.winner else None,
        budget={"max_drop": search.budget.max_drop, "min_cosine": search.budget.min_cosine},
        batch_size=search.batch_size, threads=search.threads, timing=_timing_text(search),
        timing_reused_from=search.timing_reused_from, judged_on=_judged_on(search),
        calibration_samples=search.calib_samples,
        fp32=Fp32(artifact=str(search.source.path), p50_ms=search.baseline_p50_ms, p90_ms=search.baseline_p90_ms),
        original=_original(search, model), candidates=[_row(o) for o in search.outcomes],
        skipped=[Skipped(name=s.name, why=s.why) for s in search.skipped],
        facts={"ops": len(search.facts.ops), "attention": search.facts.attention,
               "calibration_data": search.facts.calibration},
        time_budget_s=search.time_budget_s, timing_reserve_s=round(search.timing_reserve_s, 2),
        second_pass_skipped=search.second_pass_skipped, build_time_s=round(search.build_time_s, 2),
        wall_time_s=round(search.wall_time_s, 2), environment=environment(0, tool_versions(all_backends=True)),
        executor=search.executor,
        measured_on=sorted({f"{t.host} ({t.cpu})" if t.cpu else t.host for t in search.timeline if t.kind == "measure"}),
        timeline=[t.to_dict() for t in search.timeline])


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


HEADERS = ["#", "candidate", "status", "drop (calib)", "drop (eval)", "cosine", "p50 ms", "p90 ms", "× fp32",
           "× original", "size", "why"]
_TEXT_COLUMNS = (1, 2, len(HEADERS) - 1)


def _title(report: OptimizeReport) -> str:
    return f"optkit optimize: {Path(report.model).name} — winner: {report.winner or 'none'}"


def headline(report: OptimizeReport) -> str:
    """The winner and its speed-ups, vs the fp32 ONNX model and vs the original model, from the same pass."""
    w = report.candidate(report.winner)
    if w is None:
        return "No candidate is within the budget: see each one's why below."
    orig = report.original
    name = Path(report.model).name
    if orig is not None and orig.same_as_fp32:
        vs = f"{_x(w.speedup_vs_fp32)} the original model ({name}, the fp32 ONNX model itself)"
    elif w.speedup_vs_original is not None:
        vs = (f"{_x(w.speedup_vs_fp32)} the fp32 ONNX model and {_x(w.speedup_vs_original)} the original "
              f"{orig.format if orig else 'torch'} model ({name})")
    else:
        return (f"{w.name}: p50 {_f(w.p50_ms, '.3f')} ms at batch {report.batch_size}, "
                f"{_x(w.speedup_vs_fp32)} the fp32 ONNX model, timed in the same interleaved pass; original not "
                f"timed" + (f" ({orig.not_timed})." if orig and orig.not_timed else "."))
    return (f"{w.name}: p50 {_f(w.p50_ms, '.3f')} ms at batch {report.batch_size}, {vs}, "
            f"timed in the same interleaved pass.")


def _cut(report: OptimizeReport) -> str:
    """What the time budget cut short, for the summary's time line."""
    stopped = [c.name for c in report.candidates if c.status == "stopped"]
    short = [c.name for c in report.candidates if c.status == "skipped" and "s left of the" in (c.why or "")]
    cut = "".join(f"; {label}: {', '.join(names)}" for label, names in
                  (("stopped at the time budget", stopped), ("skipped for lack of time", short)) if names)
    if report.second_pass_skipped:
        cut += "; the finalists' second timing pass did not fit in the budget: the first pass ranks"
    return cut


def _facts(report: OptimizeReport) -> list[str]:
    """The summary's lines under the headline."""
    env = report.environment
    where = ""
    if report.executor != "local":
        where = (f"; built as {report.executor} tasks, timed alone on "
                 f"{', '.join(report.measured_on or ['(timings reused)'])}")
    orig = report.original
    fp32 = f"fp32 p50 {_f(report.fp32.p50_ms, '.3f')} ms"
    if orig and not orig.same_as_fp32:
        fp32 += f", original p50 {_f(orig.p50_ms, '.3f')} ms" if orig.p50_ms is not None else ", original not timed"
    reserve = report.timing_reserve_s or 0
    kept = f", the last {reserve:.0f}s of it kept for the final timing" if reserve >= 0.5 else ""
    return [
        f"Judged vs the original on {report.judged_on}.",
        f"Timing: {report.timing}; {fp32}.",
        f"Time: candidates built in {report.build_time_s:.0f}s of the {report.time_budget_s:.0f}s time "
        f"budget (--time-budget{kept}), {report.wall_time_s:.0f}s in all with the timing (measured){_cut(report)}.",
        f"CPU {env.cpu_model} ({', '.join(env.simd)}){where}.",
    ]


def _cells(report: OptimizeReport) -> list[tuple[bool, list[str]]]:
    """One row per candidate (built or not), then the ones skipped before building: what both tables show, numbered
    as the plot's dots; (is it the winner, cells)."""
    rows = [(c.name == report.winner,
             [str(i), c.name, c.status, _f(c.calibration_drop, ".3g"), _f(c.drop_vs_original, ".3g"),
              _f(c.cosine_vs_original, ".5f"), _f(c.p50_ms, ".3f"), _f(c.p90_ms, ".3f"),
              _x(c.speedup_vs_fp32), _x(c.speedup_vs_original), human_size(c.size_bytes), c.why or c.what])
            for i, c in enumerate(report.candidates, 1)]
    first = len(rows) + 1
    return rows + [(False, [str(i), s.name, "not built", *["—"] * 8, s.why])
                   for i, s in enumerate(report.skipped, first)]


def optimize_markdown(report: OptimizeReport) -> str:
    lines = [f"## {_title(report)}", "", f"**{headline(report)}**", "", *(f"- {f}" for f in _facts(report)), "",
             "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join("---" if i in _TEXT_COLUMNS else "---:" for i in range(len(HEADERS))) + "|"]
    for won, row in _cells(report):
        cells = [cell + (" **(winner)**" if won and i == 1 else "") for i, cell in enumerate(row)]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def optimize_html(report: OptimizeReport) -> str:
    """One self-contained page, styled as the run report (its CSS): the headline, the plot (dots numbered as the
    table, the winner ringed), the table, the environment."""
    from optkit.report.html import CSS, Dot, plot_svg

    points = [Dot(i, c.name, c.p50_ms, report.batch_size, report.threads, c.metric, c.cosine_vs_original)
              for i, c in enumerate(report.candidates, 1) if c.p50_ms is not None]
    winner = next((i for i, c in enumerate(report.candidates, 1) if c.name == report.winner), None)
    head = "".join(f'<th class="{"l" if i in _TEXT_COLUMNS else ""}">{escape(h)}</th>' for i, h in enumerate(HEADERS))
    body = []
    for won, row in _cells(report):
        tds = []
        for i, cell in enumerate(row):
            mark = '<span class="winner">winner</span>' if won and i == 1 else ""
            tds.append(f'<td class="{"l" if i in _TEXT_COLUMNS else ""}">{escape(cell)}{mark}</td>')
        body.append(("<tr class='best'>" if won else "<tr>") + "".join(tds) + "</tr>")
    ok = report.winner is not None
    env = report.environment
    versions = ", ".join(f"{k} {v}" for k, v in sorted(env.versions.items()))
    title = escape(_title(report))
    facts = "".join(f"<li>{escape(f)}</li>" for f in _facts(report))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{CSS}</style></head><body>
<h1>{title}</h1>
<p><span class="status {'passed' if ok else 'failed'}">{escape(report.status)}</span></p>
<p class="headline">{escape(headline(report))}</p>
<ul class="facts muted">{facts}</ul>
<h2>Accuracy vs latency</h2>
{plot_svg(points, highlight=winner)}
<h2>Candidates</h2>
<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>
<h2>Environment</h2>
<p class="muted">{escape(env.cpu_model)} — {env.cores} logical cores,
{escape(', '.join(env.simd))}; {escape(env.os)}<br>{escape(versions)}</p>
</body></html>
"""


def best_recipe_text(search: Search) -> str:
    """best.yaml: the recipe that rebuilds the winner from MODEL with ``optkit run`` (into ``best/`` beside it)."""
    w = search.winner
    if w is None:
        raise ValueError("best.yaml is written only for a winner")
    header = (f"# Written by optkit optimize: the fastest candidate within budget ({w.name}: {w.candidate.what}).\n"
              f"# Rebuild it with: optkit run {{this file}}  (optimize ran it into best/: every step is in the cache;\n"
              f"# measure: is what the candidates were built with, and another value builds every step again)\n")
    return header + str(yaml.safe_dump(search.recipe, sort_keys=False, default_flow_style=None))


BEST_SUFFIXES = (".onnx", ".xml")  # a winner's copy: best.onnx, or best.xml with best.bin beside it


def write_optimize_outputs(out_dir: Path, search: Search, model: str) -> OptimizeReport:
    """The reports, and for a winner its copy (with a sidecar of its own) and best.yaml, written together (staged,
    then renamed); a previous winner's copy in another format is removed."""
    from optkit.types.artifact import sidecar_path

    report = optimize_report(search, model)
    written: set[Path] = set()
    with Staging() as stage:
        # best.yaml's build (its ledger) when there is one
        winner = (search.best or search.winner.artifact) if search.winner else None
        if winner is not None:
            dst = out_dir / f"best{winner.path.suffix}"
            copy = copy_artifact(winner, dst, stage)
            written = {*(out_dir / f"best{f.suffix}" for f in winner.files()), sidecar_path(dst)}
            report.best = Best(artifact=str(dst), recipe=str(out_dir / "best.yaml"),
                               run=str(search.best.path.parent) if search.best else None,
                               sha256=copy.record.sha256 if copy.record else copy.digest())
            stage.write_text(out_dir / "best.yaml", best_recipe_text(search))
        stage.write_text(out_dir / "report.json", dumps_json(report.to_json()))
        stage.write_text(out_dir / "report.md", optimize_markdown(report))
        stage.write_text(out_dir / "report.html", optimize_html(report))
        stage.commit()
    for suffix in BEST_SUFFIXES:  # a previous winner's copy (optkit's: it has a sidecar) in another format
        stale = out_dir / f"best{suffix}"
        if stale not in written and sidecar_path(stale).is_file():
            for path in (stale, sidecar_path(stale), *([stale.with_suffix(".bin")] if suffix == ".xml" else [])):
                path.unlink(missing_ok=True)
    return report
