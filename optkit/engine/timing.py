"""Timing across a chain: the ledger's one interleaved pass over every row at the end of a run, and a
speed step's output against its input when nothing else is measured."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optkit.engine.setup import guard
from optkit.eval.data import EvalData
from optkit.eval.measure import MeasureSettings
from optkit.types.artifact import Artifact, TensorSpec, open_artifact
from optkit.types.errors import OptkitError
from optkit.types.records import StepRecord
from optkit.types.ui import UI


def speed_vs_input(step: str, parent: Artifact, new: Artifact, data: EvalData, settings: MeasureSettings,
                   ui: UI) -> dict[str, Any]:
    """Batch-1 p50 of a speed step's output and its input, timed side by side (for runs that measure nothing
    else): the facts for the step's details; warned about when the output is slower."""
    from optkit.eval.measure import quick_p50s

    with ui.status(f"{step}: timing the output against its input interleaved"), guard(f"timing {step}'s output"):
        before, after = quick_p50s([parent, new], data, settings)
    if after >= before:
        ui.warn(f"{step} output is SLOWER than its input: {after:.3f} vs {before:.3f} ms at batch 1 "
                f"({before / after:.2f}x, timed side by side)")
    return {"input_p50_ms": before, "p50_ms": after, "speedup": before / after, "timing": "interleaved, batch 1"}




def reopen(record: StepRecord) -> Artifact | None:
    """An ancestor's artifact from its ledger row, only if its files still hold the bytes the row describes."""
    try:
        path = Path(record.artifact)
        if record.format == "torch":
            art = Artifact(path=path, format="torch", source=dict(record.details.get("source") or {}),
                           inputs=[TensorSpec.from_dict(t) for t in record.inputs],
                           outputs=[TensorSpec.from_dict(t) for t in record.outputs])
            if not art.source.get("kind"):
                return None
        elif path.exists():
            art = open_artifact(path)
        else:
            return None
        return art if art.digest() == record.sha256 else None
    except (OptkitError, OSError, KeyError, TypeError, ValueError):
        return None


def time_ledger(final: Artifact, known: dict[str, Artifact], data: EvalData, settings: MeasureSettings,
                 ui: UI) -> list[list[dict[str, Any]] | None]:
    """Every row of the final ledger timed again, together, in one interleaved round-robin pass: speedups
    between rows then compare latencies taken in the same seconds, true on a busy machine too."""
    from optkit.eval.measure import measure_side_by_side

    chain = final.chain()
    arts = [known.get(rec.sha256) or reopen(rec) for rec in chain]
    present = [i for i, a in enumerate(arts) if a is not None]
    if len(present) < 2:
        return [None] * len(chain)
    missing = [chain[i].step for i, a in enumerate(arts) if a is None]
    if missing:
        ui.warn(f"not timed with the others (file moved or changed since): {', '.join(missing)}; "
                "their latency is the one measured when they were built")
    with ui.status(f"timing the ledger's {len(present)} artifacts interleaved"), guard("timing the ledger"):
        latency = measure_side_by_side([arts[i] for i in present], data, settings)
    out: list[list[dict[str, Any]] | None] = [None] * len(chain)
    for i, lat in zip(present, latency):
        out[i] = lat
    return out
