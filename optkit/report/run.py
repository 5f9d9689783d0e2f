"""What ``optkit run`` leaves in its output directory for people, machines and auditors.

- ``report.json``: the ledger, the profiles, every gate's verdict, the environment (CPU model and
  flags, library versions, seed), which steps came from the cache, and the error if a step failed.
- ``report.md``: the same for a pull request (appended to ``$GITHUB_STEP_SUMMARY`` when set).
- ``report.html``: one self-contained page (no scripts, no external files): accuracy vs latency of
  every row with the Pareto front highlighted, the ledger and the gates.
- ``manifest.json``: the sha256 of every file in the directory, the recipe's sha256 and the tool
  versions, so a deploy artifact can be traced to exactly how it was built.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from optkit.types.files import Staging, dumps_json, sha256_file
from optkit.types.ledger import Environment, GateResult, LedgerRow, Profile, RunReport
from optkit.types.machine import cpu_info
from optkit.report.ledger import ledger_markdown

if TYPE_CHECKING:
    from optkit.engine.outcome import RecipeOutcome

REPORT_FILES = ("report.json", "report.md", "report.html", "manifest.json")


def environment(seed: int, versions: dict[str, str]) -> Environment:
    return Environment(cpu=cpu_info(), os=platform.platform(), python=platform.python_version(), versions=versions,
                       seed=seed)


def build_report(*, recipe_path: Path, rows: list[LedgerRow], profiles: list[Profile], gates: list[GateResult],
                 cached: list[int], wall_time_s: float, env: Environment, error: str | None = None,
                 timing_measured_at: str | None = None, executor: dict[str, Any] | None = None) -> RunReport:
    """``timing_measured_at``: when the ledger's reused figures were measured; ``executor``: a parallel run's."""
    return RunReport(
        recipe=str(recipe_path), recipe_sha256=sha256_file(recipe_path),
        status="step failed" if error else ("gate failed" if any(not g.passed for g in gates) else "passed"),
        error=error, steps=rows, profiles=profiles, gates=gates, cached_steps=cached,
        wall_time_s=round(wall_time_s, 3), environment=env, timing_measured_at=timing_measured_at, executor=executor)


def report_markdown(report: RunReport) -> str:
    icon = {"passed": "✅", "gate failed": "❌", "step failed": "💥"}[report.status]
    lines = [f"## optkit: {Path(report.recipe).name} {icon} {report.status}", ""]
    if report.error:
        lines += [f"**Error:** {report.error}", ""]
    if report.steps:
        lines += [ledger_markdown(report.steps)]
    if report.gates:
        lines += ["| gate | result |", "|---|---|"]
        lines += [f"| {g.gate} | {'✅' if g.passed else '❌'} {g.text} |" for g in report.gates]
        lines.append("")
    cached = len(report.cached_steps)
    env = report.environment
    lines.append(f"_{env.cpu_model} ({env.cores} cores; {', '.join(env.simd) or 'no SIMD flags'}), seed {env.seed}, "
                 f"{report.wall_time_s:.1f}s"
                 + (f", {cached} step(s) from the cache" if cached else "")
                 + (f", ledger timings measured at {report.timing_measured_at}" if report.timing_measured_at
                    else "") + "._\n")
    return "\n".join(lines)


def manifest(out_dir: Path, recipe_path: Path, versions: dict[str, str], written: list[Path]) -> dict[str, Any]:
    """sha256 and size of every file this run wrote (or reused) in ``out_dir``: never a file of the user's."""
    files = {}
    out_dir = out_dir.resolve()
    for path in sorted({Path(p).resolve() for p in written}):
        if not path.is_file() or out_dir not in path.parents:
            continue
        rel = path.relative_to(out_dir)
        if any(part.startswith(".") for part in rel.parts):  # temporary names are never part of a result
            continue
        files[rel.as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    # optkit_manifest: what makes a folder optkit's (types/files.written_by_optkit), together with the digests
    return {"optkit_manifest": 1, "recipe": str(recipe_path), "recipe_sha256": sha256_file(recipe_path),
            "versions": versions, "files": files}


def write_outputs(out_dir: Path, report: RunReport, written: Sequence[Path] = ()) -> list[Path]:
    """Write the three reports, then the manifest over the files the run wrote (``written``) and the reports."""
    from optkit.report.html import report_html

    md = report_markdown(report)
    with Staging() as stage:
        stage.write_text(out_dir / "report.json", dumps_json(report.to_json()))
        stage.write_text(out_dir / "report.md", md)
        stage.write_text(out_dir / "report.html", report_html(report))
        stage.commit()
    with Staging() as stage:
        stage.write_text(out_dir / "manifest.json",
                         dumps_json(manifest(out_dir, Path(report.recipe), report.environment.versions,
                                             [*written, *(out_dir / name for name in REPORT_FILES[:3])])))
        stage.commit()
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
    return [out_dir / name for name in REPORT_FILES]


def write_run_report(outcome: RecipeOutcome, recipe_path: Path) -> tuple[RunReport, list[Path]]:
    """A judged run's report.json/md/html and manifest, written into its output folder (also when a step failed:
    the report says which): the report and the files written."""
    from optkit.engine.versions import tool_versions

    result, error = outcome.result, outcome.error
    executor = None if outcome.executor is None else \
        {"name": outcome.executor, "tasks": [t.to_dict() for t in outcome.tasks]}
    report = build_report(recipe_path=recipe_path, rows=outcome.rows, profiles=result.profiles, gates=outcome.gates,
                          cached=result.cached, wall_time_s=result.wall_time_s,
                          env=environment(outcome.recipe.seed, tool_versions(all_backends=True)),
                          error=error.one_line() if error else None,
                          timing_measured_at=result.timing_reused_from, executor=executor)
    return report, write_outputs(outcome.out_dir, report, result.written)
