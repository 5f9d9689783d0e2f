"""``optkit optimize``'s ranking: the fp32 model and every candidate within budget timed round-robin in one
interleaved pass, then the finalists again; and the record of those figures a rerun may reuse. A PyTorch MODEL
(the original, exported first) runs in both passes too, so the speed-up vs the original comes from one pass as well.

Interleaving many models evicts each one's caches (and AMX tile state) between calls, which can reorder close
candidates (seen: OpenVINO int8 1.6 ms with one other model, 3.0 ms among six), so the finalists (within 1.3x of
the fastest) are timed again with the fp32 model, twice as long. Ratios vs fp32 always come from one pass.

A rerun whose candidates all came from the step cache finds ``timing.json``: the figures of the last pass, keyed
by everything they depend on (the digests of the timed artifacts and of the evaluation data, batch size, threads,
timing budget, the CPU's model, cores and flags, library versions, optkit's source). When the key matches, the
figures are reused and the report says so, with when they were measured; ``--retime`` measures them again.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel, ValidationError

from optkit.types.files import sha256_file
from optkit.types.records import Latency
from optkit.types.ui import UI

if TYPE_CHECKING:
    from optkit.engine.executor import Executor
    from optkit.eval.data import EvalData
    from optkit.eval.measure import MeasureSettings
    from optkit.optimize.model import Outcome, Search
    from optkit.types.artifact import Artifact

FINALISTS = 3        # at most this many are timed again, alone with the fp32 model
FINALIST_SPAN = 1.3  # ... those within this factor of the fastest in the first pass
LOAD_S = 0.5         # per model and pass: opening its runner (an ORT session, an OpenVINO compile) before timing
TIMING_FILE = "timing.json"
TIMING_VERSION = 2  # 2: the original model (a PyTorch MODEL) is timed in the same passes

LatencyEntries = list[Latency]  # one model's figures from a timing pass, one entry per batch size


class _Figures(BaseModel):
    p50_ms: float | None = None
    p90_ms: float | None = None


class _OriginalFigures(_Figures):
    not_timed: str | None = None


class _RowFigures(_Figures):
    speedup: float | None = None
    speedup_vs_original: float | None = None
    timing_pass: int | None = None


class SavedTimings(BaseModel):
    """``timing.json``: the figures of the last pass, for a rerun whose candidates all came from the cache."""

    fp32: _Figures
    original: _OriginalFigures
    rows: dict[str, _RowFigures]
    measured_at: str | None = None  # stamped by ``save_keyed``


def first_pass_s(candidates: int, original: bool, budget_s: float) -> float:
    """About how long the first timing pass takes: the fp32 model, the original and every survivor."""
    return (candidates + 1 + original) * (budget_s + LOAD_S)


def second_pass_s(finalists: int, budget_s: float) -> float:
    """About how long the finalists' second pass takes, at twice the budget, with the fp32 model."""
    return (finalists + 1) * (2 * budget_s + LOAD_S)


def timing_reserve_s(candidates: int, original: bool, budget_s: float) -> float:
    """What the builds leave of the time budget for the final timing: the first pass and a second pass of the two
    closest finalists (the usual case; a pass of more is run only when the time left holds it)."""
    return first_pass_s(candidates, original, budget_s) + (second_pass_s(min(2, candidates), budget_s)
                                                           if candidates > 1 else 0.0)


def timing_key(search: Search, alive: list[Outcome], budget_s: float) -> str:
    """Digest of everything the timing pass's figures depend on."""
    from optkit.engine.cache import json_sha256, machine_facts

    eval_path = search.source.eval_data
    facts = {
        "version": TIMING_VERSION, "fp32": search.source.digest(),
        "original": search.source.lineage[0].sha256 if search.original is not None and search.source.lineage else None,
        "candidates": [[o.name, o.record.sha256 if o.record else o.artifact.digest() if o.artifact else None]
                       for o in alive],
        "eval": sha256_file(Path(eval_path)) if eval_path and Path(eval_path).is_file() else None,
        "batch_size": search.batch_size, "threads": search.threads, "budget_s": budget_s, **machine_facts(),
    }
    return json_sha256(facts)


def _load(path: Path, key: str) -> SavedTimings | None:
    from optkit.engine.cache import keyed_entry

    raw = keyed_entry(path, key)
    try:
        return SavedTimings.model_validate(raw) if raw is not None else None
    except ValidationError:  # not what _save writes: measured again
        return None


def _apply(search: Search, alive: list[Outcome], saved: SavedTimings) -> bool:
    rows = saved.rows
    if not all(o.name in rows for o in alive):
        return False
    search.baseline_p50_ms, search.baseline_p90_ms = saved.fp32.p50_ms, saved.fp32.p90_ms
    original = saved.original
    search.original_p50_ms, search.original_p90_ms = original.p50_ms, original.p90_ms
    search.original_not_timed = original.not_timed
    for o in alive:
        row = rows[o.name]
        o.p50_ms, o.p90_ms, o.speedup, o.timing_pass = row.p50_ms, row.p90_ms, row.speedup, row.timing_pass
        o.speedup_vs_original = row.speedup_vs_original
    search.timing_reused_from = saved.measured_at
    return True


def _save(path: Path, key: str, search: Search, alive: list[Outcome]) -> None:
    from optkit.engine.cache import save_keyed

    entry = SavedTimings(
        fp32=_Figures(p50_ms=search.baseline_p50_ms, p90_ms=search.baseline_p90_ms),
        original=_OriginalFigures(p50_ms=search.original_p50_ms, p90_ms=search.original_p90_ms,
                                  not_timed=search.original_not_timed),
        rows={o.name: _RowFigures(p50_ms=o.p50_ms, p90_ms=o.p90_ms, speedup=o.speedup,
                                  speedup_vs_original=o.speedup_vs_original, timing_pass=o.timing_pass)
              for o in alive if o.p50_ms is not None})
    save_keyed(path, key, entry.model_dump(exclude={"measured_at"}))


def time_survivors(search: Search, work_dir: Path, budget_s: float, ui: UI, *, retime: bool = False,
                   executor: Executor | None = None, end_by: float | None = None) -> None:
    """Time the fp32 model and every candidate within budget (or reuse the last pass's figures, see above); each
    pass is one ``executor.measure`` task (on Ray: alone on a measurement node). ``end_by``: the time budget's end
    (a ``time.perf_counter()`` value): the finalists' second pass runs only when it fits before it."""
    from optkit.engine.setup import data_for
    from optkit.eval.measure import MeasureSettings

    alive = [o for o in search.outcomes if o.status == "built"]
    if not alive:
        return
    path = work_dir / TIMING_FILE
    key = timing_key(search, alive, budget_s)
    if not retime and all(o.cached for o in alive):
        saved = _load(path, key)
        if saved is not None and _apply(search, alive, saved):
            ui.info(f"optimize: every candidate came from the cache; reusing the timings measured at "
                    f"{saved.measured_at} on this CPU with the same artifacts, data and settings "
                    f"(--retime measures again)")
            return
    data = data_for(search.source, UI(quiet=True))
    settings = MeasureSettings(batch_sizes=(search.batch_size,), threads=search.threads, budget_s=budget_s)
    rounds = len(alive) + 1 + (search.original is not None)
    with ui.status(f"optimize: timing the fp32 model{', the original' if search.original else ''} and "
                   f"{len(alive)} candidate(s) interleaved at batch "
                   f"{search.batch_size} (~{rounds * budget_s:.0f}s)"):
        _timed_pass(search, alive, data, settings, 1, executor)
    _second_pass(search, alive, data, settings, ui, executor, end_by)
    try:
        _save(path, key, search, alive)
    except OSError as exc:  # the figures stand; only a rerun's shortcut is lost
        ui.warn(f"could not record the timings for a rerun: {exc}")


def _second_pass(search: Search, alive: list[Outcome], data: EvalData, settings: MeasureSettings, ui: UI,
                 executor: Executor | None, end_by: float | None) -> None:
    """The finalists (within ``FINALIST_SPAN`` of the fastest) timed again with the fp32 model, twice as long, when
    that fits before ``end_by``; else the first pass ranks, and the search says so."""
    budget_s = settings.budget_s
    timed = [(o.p50_ms, o) for o in alive if o.p50_ms is not None]
    best = min((p50 for p50, _ in timed), default=0.0)
    finalists = [o for _, o in sorted((t for t in timed if t[0] <= FINALIST_SPAN * best),
                                      key=lambda t: t[0])][:FINALISTS]
    if not 1 < len(finalists) < len(alive):
        return
    if end_by is not None and time.perf_counter() + second_pass_s(len(finalists), budget_s) > end_by:
        left = max(0.0, end_by - time.perf_counter())
        ui.info(f"optimize: the {len(finalists)} finalists are not timed again: {left:.0f}s of the time budget left, "
                f"too little for a second pass (~{second_pass_s(len(finalists), budget_s):.0f}s); the first pass ranks")
        search.second_pass_skipped = True
        return
    with ui.status(f"optimize: timing the {len(finalists)} finalists again with the fp32 model "
                   f"(~{(len(finalists) + 1) * 2 * budget_s:.0f}s)"):
        _timed_pass(search, finalists, data, dataclasses.replace(settings, budget_s=2 * budget_s), 2, executor)


def _figures(entries: LatencyEntries | None) -> tuple[float, float] | None:
    """(p50, p90) of a model's first entry in a timing pass, None when it was not timed: the one place the pass's
    latency figures are read."""
    if not entries:
        return None
    return entries[0].p50_ms, entries[0].p90_ms


def _artifacts(outcomes: list[Outcome]) -> list[Artifact]:
    return [o.artifact for o in outcomes if o.artifact is not None]  # every built one has its artifact


def _timed_pass(search: Search, outcomes: list[Outcome], data: EvalData, settings: MeasureSettings, number: int,
                executor: Executor | None = None) -> None:
    from optkit.eval.measure import measure_side_by_side

    def measure(arts: list[Artifact]) -> list[LatencyEntries]:
        if executor is None:
            return measure_side_by_side(arts, data, settings)
        run: Callable[..., list[LatencyEntries]] = measure_side_by_side
        result: list[LatencyEntries] = executor.measure(f"timing pass {number}", run, arts, data, settings,
                                                        num_cpus=max(1, settings.threads))
        return result

    # a PyTorch MODEL runs in the pass too (its speed-up is the headline); if it cannot, the pass goes on without it
    original = [search.original] if search.original is not None and search.original_not_timed is None else []
    try:
        lat = measure([search.source, *original, *_artifacts(outcomes)])
    except Exception as exc:  # noqa: BLE001 - whatever stops the original's runner, the candidates are still timed
        if not original:
            raise
        from optkit.types.errors import first_line

        search.original_not_timed = f"it could not be timed with the candidates ({first_line(exc)})"
        original = []
        lat = measure([search.source, *_artifacts(outcomes)])
    base = _figures(lat[0])
    orig = _figures(lat[1]) if original else None
    if number == 1 and base is not None:
        search.baseline_p50_ms, search.baseline_p90_ms = base
    if number == 1 and orig is not None:
        search.original_p50_ms, search.original_p90_ms = orig
    elif number == 1 and original:
        search.original_not_timed = f"it does not run at batch {search.batch_size}"
    vs_original = orig[0] if orig is not None else (base[0] if base is not None and not search.prefix else None)
    for o, entries in zip(outcomes, lat[1 + len(original):]):
        figures = _figures(entries)
        if figures is not None:
            (o.p50_ms, o.p90_ms), o.timing_pass = figures, number
            o.speedup = base[0] / o.p50_ms if base and base[0] else None
            o.speedup_vs_original = vs_original / o.p50_ms if vs_original else None
