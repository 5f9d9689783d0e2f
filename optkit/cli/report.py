"""optkit report ARTIFACT"""
from __future__ import annotations

from typing import Annotated

import typer

from optkit.cli import options as o


def report(
    artifact: Annotated[str, typer.Argument(help="An artifact optkit wrote (it reads <artifact>.optkit.json).")],
    json_out: o.Json = False,
    markdown: o.Markdown = False,
) -> None:
    """Print the ledger of an artifact: every step from the original model, with what it changed."""
    from optkit.cli.common import emit_ledger
    from optkit.types.artifact import open_artifact, sidecar_path
    from optkit.types.errors import UsageError
    from optkit.types.ui import UI

    art = open_artifact(artifact)
    if art.record is None:
        raise UsageError(f"{artifact} has no optkit sidecar ({sidecar_path(art.path).name})",
                         hint="Report works on artifacts optkit wrote; use 'optkit profile' to measure any model")
    emit_ledger(UI(), art, as_json=json_out, markdown=markdown)
