"""``optkit compare``'s measuring: several artifacts on the same data, with the same timing method, interleaved.
What it finds is one typed row per artifact; ``report/compare.py`` renders them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.ui import UI

Latencies = list[dict[str, Any]]  # eval's figures for one artifact, one entry per batch size


@dataclass
class ComparedArtifact:
    """One artifact of a comparison: what it is, its task metric, its outputs vs the first's, its latency at each
    batch size and the speed-up vs the first (same pass)."""

    artifact: str
    name: str
    format: str
    runtime: dict[str, Any]  # how the runtime must run it (compile's settings)
    size_bytes: int
    accuracy: dict[str, Any] | None
    fidelity_vs_first: dict[str, Any] | None = None
    latency: Latencies = field(default_factory=list)
    speedup_vs_first: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``compare --json``'s row (the keys in this order)."""
        return {"artifact": self.artifact, "name": self.name, "format": self.format, "runtime": self.runtime,
                "size_bytes": self.size_bytes, "accuracy": self.accuracy, "fidelity_vs_first": self.fidelity_vs_first,
                "latency": self.latency, "speedup_vs_first": self.speedup_vs_first}


def _p50s(latency: Latencies) -> list[float]:
    """The p50 at each batch size (eval's dicts): the one place the comparison reads a latency figure."""
    return [float(entry["p50_ms"]) for entry in latency]


def compare_artifacts(refs: list[str], batch_sizes: list[int], threads: int, budget_s: float,
                      eval_path: Path | None, ui: UI, metric: str | None = None,
                      strict: bool = False) -> list[ComparedArtifact]:
    """``metric``: the task metric (``--metric``); reference metrics compare with the first artifact. An artifact
    whose files do not match its sidecar's sha256 is warned about (``strict``: refused, before any measuring)."""
    from rich.markup import escape

    from optkit.engine.setup import probe
    from optkit.eval.data import load_npz
    from optkit.eval.measure import MeasureSettings, measure_side_by_side, metric_of, outputs_on_data, usable_threads
    from optkit.eval.metrics import fidelity
    from optkit.eval.task_metric import metric_for, resolve_metric
    from optkit.types.artifact import open_artifact
    from optkit.types.integrity import verify_digests

    if len(refs) < 2:
        raise UsageError("compare needs at least two artifacts", hint="Give the baseline first, then the others")
    chosen = resolve_metric(metric, Path.cwd())
    arts = [open_artifact(r) for r in refs]
    _check_same_inputs(arts)
    for art in arts:
        verify_digests(art, lambda text: ui.warn(escape(text)), strict=strict)
    path = eval_path or next((a.data["eval"] for a in arts if a.data.get("eval")), None)
    if path is None:
        raise UsageError("no evaluation data: none of the artifacts records any", hint="Pass --eval-data FILE.npz")
    data = load_npz(path, arts[0].inputs)
    for art in arts:  # a model the data does not fit is a bad input named as such, before anything is measured
        probe(art, data)
    chosen = metric_for(chosen, arts[0].task, data)
    threads = usable_threads(threads, ui.warn)
    settings = MeasureSettings(batch_sizes=tuple(batch_sizes), threads=threads, budget_s=budget_s)
    rows: list[ComparedArtifact] = []
    first: dict[str, Any] | None = None  # the first artifact's outputs: what the others are compared with
    for art in arts:
        outputs = outputs_on_data(art, data, settings)
        first = outputs if first is None else first
        rows.append(ComparedArtifact(str(art.path), art.path.name, art.format, art.runtime, art.size_bytes(),
                                     metric_of(outputs, data, chosen, first), fidelity(outputs, first)))
    latency = measure_side_by_side(arts, data, settings, on_batch=lambda bs, n: ui.info(
        f"timing {n} artifacts interleaved at batch {bs} ({budget_s}s each)"))
    for row, lat in zip(rows, latency):
        row.latency = lat
    base = _p50s(rows[0].latency)
    for row in rows:
        row.speedup_vs_first = [b / r for b, r in zip(base, _p50s(row.latency))]
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
