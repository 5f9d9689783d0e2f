"""``optkit compare``'s measuring: several artifacts on the same data, with the same timing method, interleaved.
What it finds is one typed row per artifact; ``report/compare.py`` renders them."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.ledger import CompareRow
from optkit.types.ui import UI

def compare_artifacts(refs: list[str], batch_sizes: list[int], threads: int, budget_s: float,
                      eval_path: Path | None, ui: UI, metric: str | None = None,
                      strict: bool = False) -> list[CompareRow]:
    """``metric``: the task metric (``--metric``); reference metrics compare with the first artifact. An artifact
    whose files do not match its sidecar's sha256 is warned about (``strict``: refused, before any measuring)."""
    from rich.markup import escape

    from optkit.engine.setup import probe
    from optkit.eval.data import load_npz
    from optkit.eval.measure import MeasureSettings, measure_side_by_side, metric_of, outputs_on_data, usable_threads
    from optkit.eval.metrics import fidelity
    from optkit.eval.task_metric import metric_for, resolve_metric
    from optkit.backends.opening import open_artifact
    from optkit.backends.integrity import verify_digests

    if len(refs) < 2:
        raise UsageError("compare needs at least two artifacts", hint="Give the baseline first, then the others")
    chosen = resolve_metric(metric, Path.cwd())
    arts = [open_artifact(r) for r in refs]
    _check_same_inputs(arts)
    for art in arts:
        verify_digests(art, lambda text: ui.warn(escape(text)), strict=strict)
    path = eval_path or next((a.eval_data for a in arts if a.eval_data), None)
    if path is None:
        raise UsageError("no evaluation data: none of the artifacts records any", hint="Pass --eval-data FILE.npz")
    data = load_npz(path, arts[0].inputs)
    for art in arts:  # a model the data does not fit is a bad input named as such, before anything is measured
        probe(art, data)
    chosen = metric_for(chosen, arts[0].task, data)
    threads = usable_threads(threads, ui.warn)
    settings = MeasureSettings(batch_sizes=tuple(batch_sizes), threads=threads, budget_s=budget_s)
    rows: list[CompareRow] = []
    first: dict[str, Any] | None = None  # the first artifact's outputs: what the others are compared with
    for art in arts:
        outputs = outputs_on_data(art, data, settings)
        first = outputs if first is None else first
        rows.append(CompareRow(artifact=str(art.path), name=art.path.name, format=art.format, runtime=art.runtime,
                               size_bytes=art.size_bytes(), accuracy=metric_of(outputs, data, chosen, first),
                               fidelity_vs_first=fidelity(outputs, first)))
    latency = measure_side_by_side(arts, data, settings, on_batch=lambda bs, n: ui.info(
        f"timing {n} artifacts interleaved at batch {bs} ({budget_s}s each)"))
    for row, lat in zip(rows, latency):
        row.latency = lat
        row.speedup_vs_first = [b.p50_ms / r.p50_ms for b, r in zip(latency[0], lat)]
    return rows


def _check_same_inputs(arts: list[Artifact]) -> None:
    """Every model runs on the same data: their inputs must have the same names (models whose inputs are not
    known before loading, a TorchScript file, are not checked here)."""
    first = [i.name for i in arts[0].inputs]
    for art in arts[1:]:
        names = [i.name for i in art.inputs]
        if first and names and set(names) != set(first):
            raise UsageError(f"{arts[0].path.name} takes inputs [{', '.join(first)}] but {art.path.name} takes "
                             f"[{', '.join(names)}]: compare runs every model on the same data",
                             hint="Compare models of the same inputs (an export, quantization... of the first)")
