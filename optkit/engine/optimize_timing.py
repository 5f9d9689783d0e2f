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
from typing import TYPE_CHECKING, Any

from optkit.types.files import sha256_file
from optkit.types.ui import UI

if TYPE_CHECKING:
    from optkit.engine.executor import Executor
    from optkit.engine.optimize import Outcome, Search

FINALISTS = 3        # at most this many are timed again, alone with the fp32 model
FINALIST_SPAN = 1.3  # ... those within this factor of the fastest in the first pass
LOAD_S = 0.5         # per model and pass: opening its runner (an ORT session, an OpenVINO compile) before timing
TIMING_FILE = "timing.json"
TIMING_VERSION = 2  # 2: the original model (a PyTorch MODEL) is timed in the same passes


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


def timing_key(search: "Search", alive: list["Outcome"], budget_s: float) -> str:
    """Digest of everything the timing pass's figures depend on."""
    from optkit.engine.cache import _json_sha256, machine_facts

    eval_path = search.source.data.get("eval")
    facts = {
        "version": TIMING_VERSION, "fp32": search.source.digest(),
        "original": search.source.lineage[0].sha256 if search.original is not None and search.source.lineage else None,
        "candidates": [[o.name, o.record.sha256 if o.record else o.artifact.digest()] for o in alive],
        "eval": sha256_file(Path(eval_path)) if eval_path and Path(eval_path).is_file() else None,
        "batch_size": search.batch_size, "threads": search.threads, "budget_s": budget_s, **machine_facts(),
    }
    return _json_sha256(facts)


def _load(path: Path, key: str) -> dict[str, Any] | None:
    from optkit.engine.cache import keyed_entry

    raw = keyed_entry(path, key)
    return raw if raw is not None and isinstance(raw.get("rows"), dict) else None


def _apply(search: "Search", alive: list["Outcome"], saved: dict[str, Any]) -> bool:
    rows = saved["rows"]
    if not all(o.name in rows for o in alive):
        return False
    search.baseline_p50_ms, search.baseline_p90_ms = saved["fp32"]["p50_ms"], saved["fp32"]["p90_ms"]
    original = saved["original"]
    search.original_p50_ms, search.original_p90_ms = original["p50_ms"], original["p90_ms"]
    search.original_not_timed = original["not_timed"]
    for o in alive:
        row = rows[o.name]
        o.p50_ms, o.p90_ms, o.speedup, o.timing_pass = row["p50_ms"], row["p90_ms"], row["speedup"], row["timing_pass"]
        o.speedup_vs_original = row["speedup_vs_original"]
    search.timing_reused_from = saved["measured_at"]
    return True


def _save(path: Path, key: str, search: "Search", alive: list["Outcome"]) -> None:
    from optkit.engine.cache import save_keyed

    entry = {"fp32": {"p50_ms": search.baseline_p50_ms, "p90_ms": search.baseline_p90_ms},
             "original": {"p50_ms": search.original_p50_ms, "p90_ms": search.original_p90_ms,
                          "not_timed": search.original_not_timed},
             "rows": {o.name: {"p50_ms": o.p50_ms, "p90_ms": o.p90_ms, "speedup": o.speedup,
                               "speedup_vs_original": o.speedup_vs_original,
                               "timing_pass": o.timing_pass} for o in alive if o.p50_ms is not None}}
    save_keyed(path, key, entry)


def time_survivors(search: "Search", work_dir: Path, budget_s: float, ui: UI, *, retime: bool = False,
                   executor: "Executor | None" = None, end_by: float | None = None) -> None:
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
                    f"{saved['measured_at']} on this CPU with the same artifacts, data and settings "
                    f"(--retime measures again)")
            return
    data = data_for(search.source, UI(quiet=True))
    settings = MeasureSettings(batch_sizes=(search.batch_size,), threads=search.threads, budget_s=budget_s)
    rounds = len(alive) + 1 + (search.original is not None)
    with ui.status(f"optimize: timing the fp32 model{', the original' if search.original else ''} and "
                   f"{len(alive)} candidate(s) interleaved at batch "
                   f"{search.batch_size} (~{rounds * budget_s:.0f}s)"):
        _timed_pass(search, alive, data, settings, 1, executor)
    timed = [o for o in alive if o.p50_ms is not None]
    best = min((o.p50_ms for o in timed), default=None)
    finalists = sorted((o for o in timed if o.p50_ms <= FINALIST_SPAN * best), key=lambda o: o.p50_ms)[:FINALISTS]
    if 1 < len(finalists) < len(alive) and end_by is not None \
            and time.perf_counter() + second_pass_s(len(finalists), budget_s) > end_by:
        left = max(0.0, end_by - time.perf_counter())
        ui.info(f"optimize: the {len(finalists)} finalists are not timed again: {left:.0f}s of the time budget left, "
                f"too little for a second pass (~{second_pass_s(len(finalists), budget_s):.0f}s); the first pass ranks")
        search.second_pass_skipped = True
    elif 1 < len(finalists) < len(alive):
        with ui.status(f"optimize: timing the {len(finalists)} finalists again with the fp32 model "
                       f"(~{(len(finalists) + 1) * 2 * budget_s:.0f}s)"):
            _timed_pass(search, finalists, data, dataclasses.replace(settings, budget_s=2 * budget_s), 2, executor)
    try:
        _save(path, key, search, alive)
    except OSError as exc:  # the figures stand; only a rerun's shortcut is lost
        ui.warn(f"could not record the timings for a rerun: {exc}")


def _timed_pass(search: "Search", outcomes: list["Outcome"], data, settings, number: int,
                executor: "Executor | None" = None) -> None:
    from optkit.eval.measure import measure_side_by_side

    def measure(arts: list) -> list:
        if executor is None:
            return measure_side_by_side(arts, data, settings)
        return executor.measure(f"timing pass {number}", measure_side_by_side, arts, data, settings,
                                num_cpus=max(1, settings.threads))

    # a PyTorch MODEL runs in the pass too (its speed-up is the headline); if it cannot, the pass goes on without it
    original = [search.original] if search.original is not None and search.original_not_timed is None else []
    try:
        lat = measure([search.source, *original, *(o.artifact for o in outcomes)])
    except Exception as exc:  # noqa: BLE001 - whatever stops the original's runner, the candidates are still timed
        if not original:
            raise
        from optkit.types.errors import first_line

        search.original_not_timed = f"it could not be timed with the candidates ({first_line(exc)})"
        original = []
        lat = measure([search.source, *(o.artifact for o in outcomes)])
    base = lat[0][0].p50_ms if lat[0] else None
    orig = (lat[1][0] if lat[1] else None) if original else None
    if number == 1 and base is not None:
        search.baseline_p50_ms, search.baseline_p90_ms = base, lat[0][0].p90_ms
    if number == 1 and orig is not None:
        search.original_p50_ms, search.original_p90_ms = orig.p50_ms, orig.p90_ms
    elif number == 1 and original:
        search.original_not_timed = f"it does not run at batch {search.batch_size}"
    vs_original = orig.p50_ms if orig is not None else (base if not search.prefix else None)
    for o, entries in zip(outcomes, lat[1 + len(original):]):
        if entries:
            o.p50_ms, o.p90_ms, o.timing_pass = entries[0].p50_ms, entries[0].p90_ms, number
            o.speedup = base / o.p50_ms if base else None
            o.speedup_vs_original = vs_original / o.p50_ms if vs_original else None

