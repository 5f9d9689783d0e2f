"""``optkit report DIR``: the ledger of an output folder optkit wrote.

- A run's folder (``optkit run``): its final artifact's chain (from the artifact's own sidecar), with the latency of
  the run's interleaved pass that ``report.json`` kept, where its rows are that chain's.
- An optimize folder: the summary table from its ``report.json`` and the winner's ledger (``best.*``'s sidecar).

Only ``report.json``'s figures are read from it; every name and row comes from the sidecars, checked on opening.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optkit.types.artifact import Artifact, sidecar_path
from optkit.backends.opening import open_artifact
from optkit.types.errors import UsageError
from optkit.types.ledger import RunReport
from optkit.types.records import Latency

REPORT = "report.json"
_HINT = "Pass an artifact optkit wrote, or a folder 'optkit run' or 'optkit optimize' wrote (with its report.json)"


@dataclass
class FolderLedger:
    kind: str                          # run | optimize
    final: Artifact | None             # the run's last artifact, or the winner's copy (None: no winner)
    latency: list[list[Latency] | None] | None = None  # the run's interleaved figures, one list per ledger row
    summary: str | None = None         # optimize's table (Markdown, as the command prints it)
    report: dict[str, Any] | None = None


def is_output_folder(path: Path) -> bool:
    """A folder with optkit's report.json that is not itself an artifact (a pruned model folder has a sidecar)."""
    return path.is_dir() and (path / REPORT).is_file() and not sidecar_path(path).is_file()


def read_folder(folder: Path) -> FolderLedger:
    path = folder / REPORT
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is unreadable ({type(exc).__name__})", hint=_HINT) from None
    if isinstance(report, dict) and isinstance(report.get("candidates"), list):
        return _optimize(folder, report)
    if isinstance(report, dict) and isinstance(report.get("steps"), list) and "recipe" in report:
        return _run(folder, report)
    raise UsageError(f"{path} is not a report optkit wrote", hint=_HINT)


def _artifact(folder: Path, stored: Any, sha256: Any = None) -> Artifact | None:
    """The artifact a report names (by its path, or by its name in ``folder`` when the folder was moved), if it
    is one optkit wrote and, given ``sha256``, the one the report describes."""
    if not isinstance(stored, str) or not stored:
        return None
    for candidate in (Path(stored), folder / Path(stored).name):
        if candidate.exists() and sidecar_path(candidate).is_file():
            art = open_artifact(candidate)
            if art.record is not None and (sha256 is None or art.record.sha256 == sha256):
                return art
    return None


def _run(folder: Path, raw: dict[str, Any]) -> FolderLedger:
    """The run's final artifact, named by its last row (read only as far as that: a report whose final artifact is
    gone says so); the interleaved figures through the report's records, where its rows are that chain's."""
    from pydantic import ValidationError

    rows = [r for r in raw["steps"] if isinstance(r, dict)]
    if not rows:
        raise UsageError(f"the run in {folder} finished no step ({raw.get('status')})",
                         hint=f"Its error: {raw.get('error')}" if raw.get("error") else _HINT)
    final = _artifact(folder, rows[-1].get("artifact"), rows[-1].get("sha256"))
    if final is None:
        raise UsageError(f"the final artifact of the run in {folder} is gone or changed since its report",
                         hint="Run the recipe again (optkit run) to rebuild it")
    latency: list[list[Latency] | None] | None = None
    if [r.get("sha256") for r in rows] == [rec.sha256 for rec in final.chain()]:
        try:
            report = RunReport.model_validate(raw)
            latency = [r.latency_all if r.timing == "interleaved" else None for r in report.steps]
        except ValidationError:
            latency = None  # the sidecars' step-time figures, then
    return FolderLedger("run", final, latency=latency, report=raw)


def _optimize(folder: Path, raw: dict[str, Any]) -> FolderLedger:
    from optkit.report.optimize import BEST_SUFFIXES, optimize_markdown
    from optkit.types.optimize_report import OptimizeReport

    try:
        report = OptimizeReport.model_validate(raw)
        summary = optimize_markdown(report)
    except ValueError:  # a ValidationError too
        raise UsageError(f"{folder / REPORT} is not an optimize report this optkit can read",
                         hint="Run optkit optimize again into that folder (a rerun rebuilds nothing)") from None
    final = None
    if report.winner:
        best = report.best
        stored = [best.artifact if best else None, *(str(folder / f"best{s}") for s in BEST_SUFFIXES)]
        final = next((a for a in (_artifact(folder, s, best.sha256 if best else None) for s in stored)
                      if a is not None), None)
        if final is None:
            raise UsageError(f"the winner's copy in {folder} (best.*) is gone or has no sidecar",
                             hint="Run optkit optimize again into that folder (a rerun rebuilds nothing)")
    return FolderLedger("optimize", final, summary=summary, report=raw)
