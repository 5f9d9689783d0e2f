"""How ``optkit optimize`` judges a candidate against the original model: on the calibration split (the data the
search may tune on: a drop there rejects it) and on the evaluation split (held out: the figures of every ledger,
which the lossy steps' own checks also hold to the same budget). Both with the task metric when it can be
computed on that split, else the mean output cosine."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from optkit.engine.optimize_space import Budget

if TYPE_CHECKING:
    from optkit.engine.optimize import Outcome
    from optkit.eval.data import EvalData
    from optkit.eval.task_metric import Metric
    from optkit.types.artifact import Artifact
    from optkit.types.records import OutputStats

CALIB_SAMPLES = 256  # the calibration split judged (its first samples): enough for a drop of well under a point


@dataclass
class Verdict:
    """One split's comparison of a candidate with the original."""

    split: str                  # calibration | evaluation
    drop: float | None = None   # task-metric drop vs the original (points for fractions)
    metric: str | None = None
    cosine: float | None = None
    degenerate: str | None = None  # why its outputs carry no answer where the original's do (eval/metrics.degenerate)

    def text(self) -> str:
        if self.degenerate is not None:
            return f"{self.split} degenerate"
        if self.drop is not None:
            return f"{self.split} {self.metric} drop {self.drop:.3g}"
        return f"{self.split} cosine {self.cosine:.5f}" if self.cosine is not None else f"{self.split} not judged"

    def to_json(self) -> dict[str, Any]:
        facts = {"split": self.split, "metric": self.metric, "drop": self.drop, "cosine": self.cosine}
        return {**facts, "degenerate": self.degenerate} if self.degenerate is not None else facts

    def reasons(self, budget: Budget) -> list[str]:
        """Why the candidate is rejected on this split: degenerate outputs first (whatever they score), then the
        budget."""
        from optkit.eval.task_metric import DEFAULT_MIN_COSINE

        if self.degenerate is not None:
            return [self.degenerate]
        out = []
        if self.drop is not None and self.drop > budget.drop_limit + 1e-9:
            out.append(f"{self.metric} drop {self.drop:.3g} > {budget.drop_limit:g}")
        limit = budget.min_cosine if budget.min_cosine is not None else (
            None if self.drop is not None else DEFAULT_MIN_COSINE)
        if limit is not None and (self.cosine is None or self.cosine < limit):
            out.append(f"cosine {self.cosine if self.cosine is not None else float('nan'):.5f} < {limit:g}")
        return out


def evaluation_verdict(artifact: "Artifact") -> Verdict:
    """The evaluation split's verdict, from the candidate's ledger (row 0: the original). The engine refuses a step
    whose product is degenerate on that split; the ledger's output statistics catch one it did not judge (a cache
    from before): NaN, or a spread of 0 where the original's output varies."""
    chain = artifact.chain()
    first, last = chain[0].measured, chain[-1].measured
    verdict = Verdict("evaluation", cosine=last.fidelity.cosine if last.fidelity else None,
                      degenerate=_collapsed(first.output_stats, last.output_stats))
    if first.accuracy and last.accuracy:
        verdict.drop = last.accuracy.drop_of(first.accuracy)
        verdict.metric = last.accuracy.metric
    return verdict


def _collapsed(original: "list[OutputStats] | None", candidate: "list[OutputStats] | None") -> str | None:
    """A collapse the ledger's output statistics show: NaN/inf where the original's are finite, or every value
    the same (std 0) where the original's vary."""
    if not original or not candidate or len(original) != len(candidate):
        return None
    for ref, out in zip(original, candidate):
        if out.nonfinite_samples and not ref.nonfinite_samples:
            return f"output '{out.name}' is NaN or infinite on {out.nonfinite_samples} sample(s) where the original's is finite"
        if out.std == 0 and ref.std:
            value = f"{out.mean:g}" if out.mean is not None else "one value"
            return f"output '{out.name}' is {value} everywhere where the original's varies (std {ref.std:.3g})"
    return None


@dataclass
class CalibrationJudge:
    """Candidates' outputs on the calibration split against the original's (computed once, on first use)."""

    source: "Artifact"
    path: Path | None
    metric_spec: str | None
    threads: int = 1
    _state: dict[str, Any] = field(default_factory=dict)

    def _prepare(self) -> tuple["EvalData", "Metric | None", dict[str, np.ndarray], dict[str, Any] | None]:
        if not self._state:
            from optkit.eval.data import EvalData, load_npz
            from optkit.eval.measure import MeasureSettings, metric_of, outputs_on_data
            from optkit.eval.task_metric import default_metric, resolve_metric

            full = load_npz(self.path, self.source.inputs)
            n = min(len(full), CALIB_SAMPLES)
            data = EvalData({k: v[:n] for k, v in full.inputs.items()},
                            None if full.labels is None else full.labels[:n], full.path, full.sha256)
            metric = resolve_metric(self.metric_spec, Path.cwd())
            if metric is not None and metric.needs_labels and data.labels is None:
                metric = None  # a labelled metric on an unlabelled split: judged by agreement instead
            metric = metric or default_metric(self.source.task, data.labels)
            settings = MeasureSettings(threads=self.threads)
            reference = outputs_on_data(self.source, data, settings)
            self._state.update(data=data, metric=metric, settings=settings, reference=reference,
                               base=metric_of(reference, data, metric, reference))
        s = self._state
        return s["data"], s["metric"], s["reference"], s["base"]

    @property
    def samples(self) -> int | None:
        """How many samples of the split are judged (known once a candidate was)."""
        data = self._state.get("data")
        return len(data) if data is not None else None

    def verdict(self, artifact: "Artifact") -> Verdict | None:
        if self.path is None:
            return None
        from optkit.eval.measure import metric_of, outputs_on_data
        from optkit.eval.metrics import degenerate, fidelity

        data, metric, reference, base = self._prepare()
        outputs = outputs_on_data(artifact, data, self._state["settings"])
        fid = fidelity(outputs, reference)
        verdict = Verdict("calibration", cosine=fid.cosine if fid else None,
                          degenerate=degenerate(outputs, reference, "the original's"))
        if verdict.degenerate is not None:  # whatever it would score: NaN or all-zero outputs can score anything
            return verdict
        value = metric_of(outputs, data, metric, reference)
        if base and value:
            verdict.drop, verdict.metric = metric.drop(base.value, value.value), value.metric
        return verdict


def judge(outcome: "Outcome", budget: Budget, calibration: CalibrationJudge | None) -> None:
    """Reject ``outcome`` when it is outside the budget on either split (the calibration split first)."""
    outcome.verdicts = [v for v in (calibration.verdict(outcome.artifact) if calibration else None,
                                    evaluation_verdict(outcome.artifact)) if v is not None]
    for verdict in outcome.verdicts:
        reasons = verdict.reasons(budget)
        if reasons:
            outcome.status = "rejected"
            outcome.why = (f"degenerate outputs on the {verdict.split} split: {verdict.degenerate}"
                           if verdict.degenerate is not None else
                           f"outside the budget vs the original on the {verdict.split} split: " + "; ".join(reasons))
            return
