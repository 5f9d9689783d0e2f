"""What ``optkit optimize`` leaves in its output folder.

- ``best.onnx`` / ``best.xml`` + ``best.bin``: a copy of the winner, and ``best.yaml``: the recipe that rebuilds it
  from MODEL with ``optkit run`` (into ``DIR/best/``).
- ``report.json`` / ``report.md`` / ``report.html``: every candidate with its status, why it was rejected or
  skipped, its metric drop and cosine vs the original, p50/p90 from the one interleaved pass, size, and the
  accuracy-vs-latency Pareto front; the CPU and its flags.
- ``candidates/NAME/``: each candidate's artifacts and sidecars (the step cache for a rerun).
"""
from __future__ import annotations

import shutil
from html import escape
from pathlib import Path
from typing import Any

import yaml

from optkit.engine.optimize import Outcome, Search
from optkit.engine.optimize_judge import CALIB_SAMPLES
from optkit.engine.optimize_timing import FINALIST_SPAN
from optkit.engine.run import tool_versions
from optkit.report.ledger import human_size
from optkit.report.run import environment
from optkit.types.files import Staging, dumps_json


def _row(o: Outcome) -> dict[str, Any]:
    c = o.candidate
    acc = o.record.measured.accuracy if o.record else None
    return {
        "name": c.name, "target": c.target, "precision": c.precision, "what": c.what, "status": o.status,
        "why": o.why, "steps": o.recipe_steps(), "artifact": str(o.artifact.path) if o.artifact else None,
        "metric": acc.to_json() if acc else None, "drop_vs_original": o.drop, "cosine_vs_original": o.cosine,
        "calibration_drop": o.verdict("calibration").drop if o.verdict("calibration") else None,
        "verdicts": [v.to_json() for v in o.verdicts],
        "p50_ms": o.p50_ms, "p90_ms": o.p90_ms,
        "speedup_vs_fp32": o.speedup, "timing_pass": o.timing_pass,
        "size_bytes": o.record.size_bytes if o.record else None, "seconds": round(o.seconds, 2), "cached": o.cached,
    }


def optimize_report(search: Search, model: str) -> dict[str, Any]:
    base = search.baseline_p50_ms
    return {
        "model": model, "status": "passed" if search.winner else "no candidate within budget",
        "winner": search.winner.name if search.winner else None,
        "budget": {"max_drop": search.budget.max_drop, "min_cosine": search.budget.min_cosine},
        "batch_size": search.batch_size, "threads": search.threads,
        "timing": f"the fp32 model and every candidate within budget in one interleaved round-robin pass at batch "
                  f"{search.batch_size}, then the finalists (within {FINALIST_SPAN}x of the fastest) again with the "
                  f"fp32 model; each ratio comes from one pass"
                  + (f" (timings reused from the pass measured at {search.timing_reused_from}: every candidate came "
                     f"from the cache, same data, CPU and settings; --retime measures again)"
                     if search.timing_reused_from else ""),
        "timing_reused_from": search.timing_reused_from,
        "judged_on": (f"the calibration split (its first {CALIB_SAMPLES} samples, {search.calib_data}) and the "
                      f"evaluation split" if search.calib_data else "the evaluation split"),
        "fp32": {"artifact": str(search.source.path), "p50_ms": base, "p90_ms": search.baseline_p90_ms},
        "candidates": [_row(o) for o in search.outcomes],
        "skipped": [{"name": s.name, "why": s.why} for s in search.skipped],
        "facts": {"ops": len(search.facts.ops), "attention": search.facts.attention,
                  "calibration_data": search.facts.calibration},
        "wall_time_s": round(search.wall_time_s, 2),
        "environment": environment(0, tool_versions(all_backends=True)),
        "executor": search.executor,
        "measured_on": sorted({f"{t.host} ({t.cpu})" if t.cpu else t.host
                               for t in search.timeline if t.kind == "measure"}),
        "timeline": [t.to_dict() for t in search.timeline],
    }


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}x"


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


HEADERS = ["candidate", "status", "drop (calib)", "drop (eval)", "cosine", "p50 ms", "p90 ms", "× fp32", "size", "why"]


def _title(report: dict) -> str:
    return f"optkit optimize: {Path(report['model']).name} — winner: {report['winner'] or 'none'}"


def _caption(report: dict) -> str:
    cpu = report["environment"]["cpu"]
    where = ""
    if report.get("executor", "local") != "local":
        where = (f"built as {report['executor']} tasks, timed alone on "
                 f"{', '.join(report.get('measured_on') or ['(timings reused)'])}; ")
    return (f"CPU {cpu.get('model')} ({', '.join(cpu.get('simd', []))}); {where}judged vs the original on "
            f"{report['judged_on']}; {report['timing']}; "
            f"fp32 p50 {_f(report['fp32']['p50_ms'], '.3f')} ms.")


def _cells(report: dict) -> list[list[str]]:
    """One row per candidate (built or not), then the ones skipped before building: what both tables show."""
    rows = [[c["name"] + (" 🏆" if c["name"] == report["winner"] else ""), c["status"],
             _f(c["calibration_drop"], ".3g"), _f(c["drop_vs_original"], ".3g"), _f(c["cosine_vs_original"], ".5f"), _f(c["p50_ms"], ".3f"),
             _f(c["p90_ms"], ".3f"), _x(c["speedup_vs_fp32"]), human_size(c["size_bytes"]), c["why"] or c["what"]]
            for c in report["candidates"]]
    return rows + [[s["name"], "not built", *["—"] * 7, s["why"]] for s in report["skipped"]]


def optimize_markdown(report: dict) -> str:
    lines = [f"## {_title(report)}", "", _caption(report), "", "| " + " | ".join(HEADERS) + " |",
             "|---|---|" + "---:|" * 7 + "---|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in _cells(report)]
    return "\n".join(lines) + "\n"


def optimize_html(report: dict) -> str:
    from optkit.report.html import plot_svg

    points = [{"index": i, "step": c["name"],
               "latency": {"p50_ms": c["p50_ms"], "batch_size": report["batch_size"], "threads": report["threads"]},
               "accuracy": c["metric"], "fidelity": {"cosine": c["cosine_vs_original"]}}
              for i, c in enumerate(report["candidates"]) if c["p50_ms"] is not None]
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in _cells(report))
    title = escape(_title(report))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<h2>{title}</h2><p>{escape(_caption(report))}</p>{plot_svg(points)}"
            f"<table><tr>{head}</tr>{body}</table></body></html>")


def best_recipe(search: Search, model: str, common: dict[str, Any]) -> str:
    """A recipe that rebuilds the winner from MODEL with ``optkit run`` (into ``best/`` beside it)."""
    w = search.winner
    steps = [*({p["name"]: p["options"]} for p in search.prefix), *w.recipe_steps()]
    recipe = {k: v for k, v in {**common, "model": model, "output_dir": "best", "steps": steps}.items() if v is not None}
    header = (f"# Written by optkit optimize: the fastest candidate within budget ({w.name}: {w.candidate.what}).\n"
              f"# Rebuild it with: optkit run {{this file}}\n")
    return header + yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)


def write_optimize_outputs(out_dir: Path, search: Search, model: str, common: dict[str, Any]) -> dict[str, Any]:
    """The reports, and for a winner its copy and best.yaml, written together (staged, then renamed)."""
    report = optimize_report(search, model)
    with Staging() as stage:
        stage.write_text(out_dir / "report.json", dumps_json(report))
        stage.write_text(out_dir / "report.md", optimize_markdown(report))
        stage.write_text(out_dir / "report.html", optimize_html(report))
        if search.winner:
            stage.write_text(out_dir / "best.yaml", best_recipe(search, model, common))
            for src in search.winner.artifact.files():
                dst = out_dir / f"best{src.suffix}"
                shutil.copyfile(src, stage.path_for(dst))
        stage.commit()
    return report
