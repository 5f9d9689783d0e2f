"""Timing across a chain: the ledger's one interleaved pass over every row at the end of a run, and a
speed step's output against its input when nothing else is measured.

A rerun of ``optkit run`` whose every step came from the cache finds ``ledger_timing.json`` in its output
folder: the last pass's figures, keyed by everything they depend on (every row's digest, the evaluation data,
the measurement settings, the CPU's model, cores and flags, library versions, optkit's source). When the key
matches they are reused and the run says when they were measured; ``--retime`` measures them again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from optkit.engine.setup import guard
from optkit.eval.data import EvalData
from optkit.eval.measure import MeasureSettings
from optkit.types.artifact import Artifact, TensorSpec
from optkit.backends.opening import open_artifact
from optkit.types.errors import OptkitError
from optkit.types.records import Latency, StepRecord
from optkit.types.source import TorchSource
from optkit.types.ui import UI

LatencyRows = list[list[Latency] | None]  # per ledger row: its latency entries (one per batch size), or None


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
            art = Artifact(path=path, format="torch", source=TorchSource.recorded_in(record),
                           inputs=[TensorSpec.from_dict(t) for t in record.inputs],
                           outputs=[TensorSpec.from_dict(t) for t in record.outputs])
            if not art.source.kind:
                return None
        elif path.exists():
            art = open_artifact(path)
        else:
            return None
        return art if art.digest() == record.sha256 else None
    except (OptkitError, OSError, KeyError, TypeError, ValueError):
        return None


def time_ledger(final: Artifact, known: dict[str, Artifact], data: EvalData, settings: MeasureSettings,
                 ui: UI) -> LatencyRows:
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
        latency = measure_side_by_side([a for a in arts if a is not None], data, settings)
    out: LatencyRows = [None] * len(chain)
    for i, lat in zip(present, latency):
        out[i] = lat
    return out


LEDGER_TIMING_FILE = "ledger_timing.json"
LEDGER_TIMING_VERSION = 1


class _SavedLedger(BaseModel):
    """``ledger_timing.json`` as ``save_keyed`` stamps it."""

    latency: LatencyRows
    measured_at: str


@dataclass(frozen=True)
class LedgerTiming:
    """The ledger's latency rows, and when they were measured if they came from an earlier run."""

    latency: LatencyRows
    reused_from: str | None = None


def ledger_key(final: Artifact, data: EvalData, settings: MeasureSettings) -> str:
    """Digest of everything the ledger pass's figures depend on."""
    import hashlib

    from optkit.engine.cache import json_sha256, machine_facts

    if data.sha256:
        data_digest = data.sha256
    else:  # synthetic samples: their bytes
        digest = hashlib.sha256()
        for name, value in sorted(data.inputs.items()):
            digest.update(name.encode() + str(value.dtype).encode() + str(value.shape).encode() + value.tobytes())
        data_digest = digest.hexdigest()
    facts = {"version": LEDGER_TIMING_VERSION, "rows": [rec.sha256 for rec in final.chain()], "data": data_digest,
             "batch_sizes": list(settings.batch_sizes), "threads": settings.threads, "budget_s": settings.budget_s,
             **machine_facts()}
    return json_sha256(facts)


def saved_ledger(path: Path, key: str) -> LedgerTiming | None:
    """The figures ``path`` holds under ``key``, or None (no file, another key, unreadable)."""
    from optkit.engine.cache import keyed_entry

    raw = keyed_entry(path, key)
    try:
        saved = _SavedLedger.model_validate(raw) if raw is not None else None
    except ValidationError:  # not what ``timed_ledger`` writes: measured again
        return None
    return LedgerTiming(latency=saved.latency, reused_from=saved.measured_at) if saved is not None else None


def timed_ledger(final: Artifact, known: dict[str, Artifact], data: EvalData, settings: MeasureSettings, ui: UI,
                 *, store: Path | None = None, reuse: bool = False) -> LedgerTiming:
    """``time_ledger``, or with ``reuse`` the figures ``store`` kept from the last pass over the same rows, data,
    settings and machine. A fresh pass is kept in ``store`` for the next run."""
    if store is None:
        return LedgerTiming(latency=time_ledger(final, known, data, settings, ui))
    key = ledger_key(final, data, settings)
    if reuse:
        saved = saved_ledger(store, key)
        if saved is not None and len(saved.latency) == len(final.chain()):
            ui.info(f"every step came from the cache; reusing the ledger timings measured at {saved.reused_from} "
                    "on this CPU with the same artifacts, data and settings (--retime measures again)")
            return saved
    latency = time_ledger(final, known, data, settings, ui)
    if any(lat is not None for lat in latency):
        try:
            from optkit.engine.cache import save_keyed

            save_keyed(store, key, {"latency": [[e.to_json() for e in lat] if lat is not None else None
                                                for lat in latency]})
        except OSError as exc:  # the figures stand; only a rerun's shortcut is lost
            ui.warn(f"could not record the ledger timings for a rerun: {exc}")
    return LedgerTiming(latency=latency)
