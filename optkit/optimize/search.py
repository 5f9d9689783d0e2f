"""``optkit optimize``: build the candidates of ``space`` through the engine (``build``), judge them against the
original model on the task metric (``judge``), time the survivors side by side in one pass (``timing``), keep the
fastest within budget and run its recipe (``best``).

Every candidate is a recipe run with the step cache on (a rerun reuses every artifact); for a PyTorch model they
share one export. Candidates are judged on the same evaluation data as every ledger, against the original model
(a step's own check judges it against its input, with the same budget). The survivors and the fp32 model are
then timed round-robin in one interleaved pass at the chosen batch size, so the ranking holds on a busy machine;
when two are within timing noise the simpler one wins (fewer steps, fp32 before int8, then smaller).

The local executor builds the candidates one after another, each in a process of its own. The Ray executor builds
them as parallel tasks (a fallback only once the candidate it stands in for missed the budget), judges each here as
it lands, and runs the timing pass as one task alone on a measurement node; the report says which node timed.

``--time-budget`` bounds the whole search (``clock``): every build ends by one deadline, the budget less a reserve
for the final timing pass; a build still running then is stopped, and how long it ran is kept in ``work/`` so a
rerun with less time left skips it instead of stopping it again.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from optkit.engine.executor import LocalExecutor
from optkit.optimize.best import best_recipe, rebuild_winner
from optkit.optimize.build import Builder, candidate_recipe
from optkit.optimize.clock import Clock, StopTimes
from optkit.optimize.judge import CalibrationJudge
from optkit.optimize.model import CandidateSettings, OptimizeRun, Outcome, Search
from optkit.optimize.space import TARGETS, ModelFacts, build_order, candidate_space
from optkit.optimize.timing import time_survivors
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.ui import UI

NOISE = 0.03  # two p50s closer than this (relative) are a tie: the simpler candidate wins
STOP_TIMES_FILE = "stopped.json"  # in work/: how long each stopped candidate ran, for the next run


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h' or plain seconds -> seconds."""
    value = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(value[-1:], None)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UsageError(f"bad --time-budget '{text}'", hint="Give a duration like 90s, 10m or 1h")
    return seconds


def _facts(source: Artifact, calib_data: str | None) -> ModelFacts:
    from optkit.steps._transformer import has_attention
    from optkit.backends import onnx_io
    from optkit.types.machine import cpu_flags

    model = onnx_io.load_model(source.path)
    return ModelFacts(ops=frozenset(n.op_type for n in model.graph.node), attention=has_attention(model),
                      calibration=bool(calib_data or source.calib_data), flags=frozenset(cpu_flags()))


def optimize(run: OptimizeRun) -> Search:
    """The search: the candidates built (``Builder``), judged, timed side by side, the fastest within budget kept,
    and its recipe run into ``DIR/best/``."""
    started = time.perf_counter()
    executor = run.executor or LocalExecutor()
    ui, out_dir = run.ui, run.out_dir
    unknown = [t for t in run.targets if t not in TARGETS]
    if unknown:
        raise UsageError(f"--targets: unknown target {', '.join(unknown)}", hint=f"Use {', '.join(TARGETS)}")
    from optkit.optimize.data import synthetic_eval_data

    settings = CandidateSettings.of(run)
    settings = dataclasses.replace(settings, eval_data=settings.eval_data
                                   or synthetic_eval_data(run.model, out_dir, settings, ui))
    source, prefix, original = _fp32_onnx(run.model, out_dir, settings, ui, UI(quiet=True), run.export or {})
    facts = _facts(source, run.calib_data)
    cands, skipped = candidate_space(facts, run.targets, run.budget, run.calib_data)
    cands = build_order(cands)  # every target's primaries, then the fallbacks: they get the time left
    search = Search(source, prefix, [Outcome(c) for c in cands], skipped, facts, run.budget, run.batch_size,
                    run.threads, original=original, time_budget_s=run.time_budget_s)
    ui.info(f"optimize: {len(cands)} candidate(s) for {', '.join(run.targets)} "
            f"({len(skipped)} skipped: {', '.join(s.name for s in skipped) or 'none'})")
    calib = run.calib_data or (str(source.calib_data) if source.calib_data else None)
    search.calib_data = calib
    judge_calib = CalibrationJudge(source, Path(calib), run.metric, run.threads) if calib else None
    clock = Clock(started, run.time_budget_s, run.timing_budget_s)
    builder = Builder(search, run.model if prefix else str(source.path), out_dir, settings, clock, ui, judge_calib,
                      executor)
    if executor.parallel:
        builder.in_parallel()
    else:
        stops = StopTimes(run.work / STOP_TIMES_FILE, search, settings.to_json())
        builder.in_order(stops)
        stops.save(ui)
    search.build_time_s = time.perf_counter() - started
    search.calib_samples = judge_calib.samples if judge_calib else None
    time_survivors(search, run.work, run.timing_budget_s, ui, retime=run.retime, executor=executor,
                   end_by=clock.started + clock.budget_s)
    search.executor, search.timeline = executor.name, list(executor.timeline)
    search.winner = winner = _choose(search.outcomes)
    if winner is not None:
        search.recipe = best_recipe(search, winner, run.model, settings)
        search.best = rebuild_winner(search.recipe, winner, out_dir, ui)
    search.wall_time_s = time.perf_counter() - started
    return search


def _fp32_onnx(model: str, out_dir: Path, settings: CandidateSettings, ui: UI, quiet: UI,
               export: dict[str, Any]) -> tuple[Artifact, list[dict[str, Any]], Artifact | None]:
    """The fp32 ONNX model every candidate starts from: MODEL itself, or its export (cached); and MODEL when it is
    not that model (a PyTorch model, timed beside the candidates so the speed-up vs the original is measured)."""
    from optkit.engine.run import collect_run
    from optkit.backends.opening import open_artifact

    source = open_artifact(model, weights=Path(settings.weights) if settings.weights else None,
                           task=settings.task, trust_remote_code=bool(settings.trust_remote_code))
    original = source if source.format == "torch" else None
    prefix: list[dict[str, Any]] = []
    if original is not None:
        prefix = [{"name": "export", "options": export, "output": str(out_dir / "work" / "00_export.onnx")}]
        ui.info("optimize: exporting the fp32 ONNX model every candidate starts from")
        result, error = collect_run(candidate_recipe(model, out_dir / "work", prefix, settings), Path.cwd(), quiet,
                                    use_cache=True, ledger_timing=False)
        if error is not None:
            raise error
        if result.final is None:
            raise UsageError(f"the export of {model} made no model")
        source = result.final
        if not original.inputs:  # a factory without a spec: the inputs its export was given (--input-shape, data)
            original = original.with_(inputs=source.inputs)
    elif source.format != "onnx":
        raise UsageError(f"optimize takes a PyTorch or ONNX model, not {source.format}",
                         hint="Pass the model you would export, or its ONNX file")
    elif export:
        ui.warn(f"{', '.join(sorted(export))} ignored: MODEL is ONNX already (they are export's options)")
    if settings.eval_data:  # the data the final timing pass feeds, as the candidates' runs were given it
        source = source.with_split("eval", Path(settings.eval_data).resolve())
    return source, prefix, original


def _choose(outcomes: list[Outcome]) -> Outcome | None:
    """The fastest built candidate; within timing noise of it, the simplest (fewer steps, fp32 before int8, then
    smaller)."""
    timed = [(o.p50_ms, o) for o in outcomes if o.status == "built" and o.p50_ms is not None]
    if not timed:
        return None
    fastest = min(p50 for p50, _ in timed)
    ties = [(p50, o) for p50, o in timed if p50 <= fastest * (1 + NOISE)]
    return min(ties, key=lambda t: (t[1].candidate.simplicity, _size(t[1]), t[0]))[1]


def _size(outcome: Outcome) -> int:
    return outcome.artifact.size_bytes() if outcome.artifact is not None else 0
