"""optkit report ARTIFACT"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optkit.cli import options as o


def report(
    artifact: Annotated[str, typer.Argument(help="An artifact optkit wrote (it reads <artifact>.optkit.json), or an "
                                                 "output folder of 'optkit run' or 'optkit optimize'.")],
    json_out: o.Json = False,
    markdown: o.Markdown = False,
    strict: Annotated[bool, typer.Option("--strict", help="Fail (exit 2) instead of warning when a file's sha256 is not the one its sidecar (or an ancestor's record) holds.")] = False,
) -> None:
    """Print the ledger of an artifact: every step from the original model, with what it changed (of a run's folder:
    its final artifact's; of an optimize folder: the candidates' table, then the winner's)."""
    from rich.markup import escape

    from optkit.cli.common import emit_ledger
    from optkit.report.folder import is_output_folder
    from optkit.backends.opening import open_artifact
    from optkit.types.artifact import sidecar_path
    from optkit.types.errors import UsageError
    from optkit.backends.integrity import verify_digests
    from optkit.types.ui import UI

    if is_output_folder(Path(artifact)):
        _report_folder(Path(artifact), json_out, markdown, strict)
        return
    art = open_artifact(artifact)
    if art.record is None:
        raise UsageError(f"{artifact} has no optkit sidecar ({sidecar_path(art.path).name})",
                         hint="Report works on artifacts optkit wrote; use 'optkit profile' to measure any model")
    ui = UI()
    verify_digests(art, lambda text: ui.warn(escape(text)), strict=strict)
    emit_ledger(ui, art, as_json=json_out, markdown=markdown)


def _report_folder(folder: Path, json_out: bool, markdown: bool, strict: bool) -> None:
    from rich.markup import escape

    from optkit.cli.common import emit_ledger, print_json
    from optkit.report.folder import read_folder
    from optkit.types.ledger import ledger_rows
    from optkit.backends.integrity import verify_digests
    from optkit.types.ui import UI

    found = read_folder(folder)
    ui = UI()
    if found.final is not None:
        verify_digests(found.final, lambda text: ui.warn(escape(text)), strict=strict)
    if json_out:
        rows = ledger_rows(found.final.chain(), found.latency) if found.final else []
        steps = [r.to_json() for r in rows]
        print_json({"optimize": found.report, "steps": steps} if found.kind == "optimize" else {"steps": steps})
        return
    if found.summary:
        print(found.summary)
    if found.final is not None:
        emit_ledger(ui, found.final, as_json=False, markdown=markdown, latency=found.latency)
