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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optkit.types.files import Staging, dumps_json, sha256_file
from optkit.types.machine import cpu_info
from optkit.report.ledger import ledger_markdown

REPORT_FILES = ("report.json", "report.md", "report.html", "manifest.json")


def environment(seed: int, versions: dict[str, str]) -> dict[str, Any]:
    return {"cpu": cpu_info(), "os": platform.platform(), "python": platform.python_version(),
            "versions": versions, "seed": seed}


def build_report(*, recipe_path: Path, rows: list[dict], profiles: list[dict], gates: list[dict], cached: list[int],
                 wall_time_s: float, env: dict, error: str | None = None) -> dict[str, Any]:
    return {
        "recipe": str(recipe_path), "recipe_sha256": sha256_file(recipe_path),
        "status": "step failed" if error else ("gate failed" if any(not g["passed"] for g in gates) else "passed"),
        "error": error, "steps": rows, "profiles": profiles, "gates": gates,
        "cached_steps": cached, "wall_time_s": round(wall_time_s, 3), "environment": env,
    }


def report_markdown(report: dict) -> str:
    status = report["status"]
    icon = {"passed": "✅", "gate failed": "❌", "step failed": "💥"}[status]
    lines = [f"## optkit: {Path(report['recipe']).name} {icon} {status}", ""]
    if report.get("error"):
        lines += [f"**Error:** {report['error']}", ""]
    if report["steps"]:
        lines += [ledger_markdown(report["steps"])]
    if report["gates"]:
        lines += ["| gate | result |", "|---|---|"]
        lines += [f"| {g['gate']} | {'✅' if g['passed'] else '❌'} {g['text']} |" for g in report["gates"]]
        lines.append("")
    cpu = report["environment"]["cpu"]
    cached = len(report["cached_steps"])
    lines.append(f"_{cpu.get('model')} ({cpu.get('logical_cores')} cores; {', '.join(cpu.get('simd') or []) or 'no SIMD flags'}), "
                 f"seed {report['environment']['seed']}, {report['wall_time_s']:.1f}s"
                 + (f", {cached} step(s) from the cache" if cached else "")
                 + (f", ledger timings measured at {report['timing_measured_at']}" if report.get("timing_measured_at")
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


def write_outputs(out_dir: Path, report: dict, written: list[Path] = ()) -> list[Path]:
    """Write the three reports, then the manifest over the files the run wrote (``written``) and the reports."""
    from optkit.report.html import report_html

    md = report_markdown(report)
    with Staging() as stage:
        stage.write_text(out_dir / "report.json", dumps_json(report))
        stage.write_text(out_dir / "report.md", md)
        stage.write_text(out_dir / "report.html", report_html(report))
        stage.commit()
    with Staging() as stage:
        stage.write_text(out_dir / "manifest.json",
                         dumps_json(manifest(out_dir, Path(report["recipe"]), report["environment"]["versions"],
                                             [*written, *(out_dir / name for name in REPORT_FILES[:3])])))
        stage.commit()
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(md + "\n")
    return [out_dir / name for name in REPORT_FILES]


@dataclass
class RecipeOutcome:
    """A recipe run with its verdicts: what ``optkit run`` prints, every file already written."""

    result: Any                 # engine.run.RunResult
    rows: list[dict]            # the ledger
    gates: list[dict]           # judged gates (none when a step failed)
    report: dict                # report.json's content
    paths: list[Path]           # reports and manifest written
    out_dir: Path
    error: Any = None           # the failed step's StepError, or None


def run_and_report(recipe, base: Path, recipe_path: Path, ui, *, use_cache: bool, force: bool,
                   retime: bool = False) -> RecipeOutcome:
    """Run a recipe, judge its gates on the ledger and write report.json/md/html and the manifest into its
    output_dir, also when a step failed (the report says which); the caller only prints and exits."""
    from optkit.engine.run import collect_run
    from optkit.types.runfolder import run_output_dir

    out_dir = recipe.output_path(base)
    with run_output_dir(out_dir, force=force):
        result, error = collect_run(recipe, base, ui, use_cache=use_cache, retime=retime)
        return _judged(recipe, base, recipe_path, result, error)


def _judged(recipe, base: Path, recipe_path: Path, result, error, executor: dict | None = None) -> RecipeOutcome:
    """Gates judged on a finished run's ledger; the reports and the manifest written."""
    from optkit.engine.gates import evaluate
    from optkit.engine.recipe import plan
    from optkit.engine.run import tool_versions
    from optkit.report.ledger import ledger_rows

    out_dir = recipe.output_path(base)
    rows = ledger_rows(result.final.chain(), result.ledger_latency) if result.final else []
    outputs = {str(ps.index): str(ps.output.resolve()) for ps in plan(recipe, base) if ps.output}
    gates = [] if error else [g.to_dict() for g in evaluate(recipe.gates, rows, outputs)]
    report = build_report(recipe_path=recipe_path, rows=rows, profiles=result.profiles, gates=gates,
                          cached=result.cached, wall_time_s=result.wall_time_s,
                          env=environment(recipe.seed, tool_versions(all_backends=True)),
                          error=error.one_line() if error else None)
    if result.timing_reused_from:
        report["timing_measured_at"] = result.timing_reused_from
    if executor:
        report["executor"] = executor
    paths = write_outputs(out_dir, report, result.written)
    return RecipeOutcome(result, rows, gates, report, paths, out_dir, error)


def run_all_on(executor, recipes: list[tuple[Any, Path, Path]], ui, *, use_cache: bool,
               force: bool, retime: bool = False) -> list[RecipeOutcome | Exception]:
    """Several recipes on a parallel executor: every recipe's steps as one build task, all at once; then each
    ledger's timing pass as a measurement task, one at a time; then each recipe's gates and reports, as
    ``run_and_report`` writes them. A recipe whose build could not start (bad input) comes back as its error."""
    import contextlib
    import time

    from optkit.engine.executor import Job
    from optkit.engine.run import build_cpus, build_recipe, ledger_pass
    from optkit.engine.timing import LEDGER_TIMING_FILE
    from optkit.types.errors import OptkitError, StepError, first_line
    from optkit.types.runfolder import run_output_dir

    names = [f"{i + 1}:{path.name}" for i, (_, _, path) in enumerate(recipes)]
    started = time.perf_counter()
    with contextlib.ExitStack() as held:
        for recipe, base, _ in recipes:  # every output folder held for the whole run, as one run would
            held.enter_context(run_output_dir(recipe.output_path(base), force=force))
        jobs = [Job(name, build_recipe, (recipe, str(base), use_cache), num_cpus=build_cpus(recipe, base))
                for name, (recipe, base, _) in zip(names, recipes)]
        ui.info(f"{executor.name}: building {len(jobs)} recipe(s) as parallel tasks")
        built = dict((job.name, got) for job, got in executor.builds(jobs))
        outcomes: list[RecipeOutcome | Exception] = []
        for name, (recipe, base, path) in zip(names, recipes):
            got = built[name]
            if isinstance(got, Exception):
                outcomes.append(got)
                continue
            result, error = got
            if error is None and result.final is not None:
                try:
                    reuse = use_cache and not retime and len(result.cached) == len(recipe.steps)
                    timing = executor.measure(f"{name} ledger", ledger_pass, recipe, str(base), result.final, reuse,
                                              num_cpus=max(1, recipe.measure.threads))
                    if timing is not None:
                        result.ledger_latency, result.timing_reused_from = timing.latency, timing.reused_from
                        store = recipe.output_path(base) / LEDGER_TIMING_FILE
                        if store.is_file():
                            result.written.append(store)
                except Exception as exc:  # noqa: BLE001 - the recipe's report says so; the others go on
                    error = exc if isinstance(exc, OptkitError) else StepError(f"timing the ledger: {first_line(exc)}")
            result.wall_time_s = time.perf_counter() - started
            mine = [t.to_dict() for t in executor.timeline if t.name in (name, f"{name} ledger")]
            outcomes.append(_judged(recipe, base, path, result, error,
                                    executor={"name": executor.name, "tasks": mine}))
    return outcomes
