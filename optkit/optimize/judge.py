"""How ``optkit optimize`` judges a candidate against the original model: on the calibration split (the data the
search may tune on: a drop there rejects it) and on the evaluation split (held out: the figures of every ledger,
which the lossy steps' own checks also hold to the same budget). Both with the task metric when it can be
computed on that split, else the mean output cosine."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optkit.optimize.model import Outcome, Verdict
from optkit.optimize.space import Budget

if TYPE_CHECKING:
    from optkit.eval.data import EvalData
    from optkit.eval.measure import MeasureSettings
    from optkit.eval.task_metric import Metric
    from optkit.types.artifact import Artifact
    from optkit.types.records import Accuracy, OutputStats

CALIB_SAMPLES = 256  # the calibration split judged (its first samples): enough for a drop of well under a point


def evaluation_verdict(artifact: Artifact) -> Verdict:
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


def _collapsed(original: list[OutputStats] | None, candidate: list[OutputStats] | None) -> str | None:
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


@dataclass(frozen=True)
class _Split:
    """The calibration split as judged: its first samples, the metric, the original's outputs and score on it."""

    data: EvalData
    metric: Metric | None
    settings: MeasureSettings
    reference: dict[str, np.ndarray]
    base: float | None  # the original's metric value


def _value_of(score: Accuracy | None) -> float | None:
    return None if score is None else score.value


@dataclass
class CalibrationJudge:
    """Candidates' outputs on the calibration split against the original's (computed once, on first use)."""

    source: Artifact
    path: Path | None
    metric_spec: str | None
    threads: int = 1
    _split: list[_Split] = field(default_factory=list)  # the prepared split, once a candidate was judged

    def _prepare(self, path: Path) -> _Split:
        if not self._split:
            from optkit.eval.data import EvalData, load_npz
            from optkit.eval.measure import MeasureSettings, metric_of, outputs_on_data
            from optkit.eval.task_metric import default_metric, resolve_metric

            full = load_npz(path, self.source.inputs)
            n = min(len(full), CALIB_SAMPLES)
            data = EvalData({k: v[:n] for k, v in full.inputs.items()},
                            None if full.labels is None else full.labels[:n], full.path, full.sha256)
            metric = resolve_metric(self.metric_spec, Path.cwd())
            if metric is not None and metric.needs_labels and data.labels is None:
                metric = None  # a labelled metric on an unlabelled split: judged by agreement instead
            metric = metric or default_metric(self.source.task, data.labels)
            settings = MeasureSettings(threads=self.threads)
            reference = outputs_on_data(self.source, data, settings)
            self._split.append(_Split(data, metric, settings, reference,
                                      _value_of(metric_of(reference, data, metric, reference))))
        return self._split[0]

    @property
    def samples(self) -> int | None:
        """How many samples of the split are judged (known once a candidate was)."""
        return len(self._split[0].data) if self._split else None

    def verdict(self, artifact: Artifact) -> Verdict | None:
        if self.path is None:
            return None
        from optkit.eval.measure import metric_of, outputs_on_data
        from optkit.eval.metrics import degenerate, fidelity

        split = self._prepare(self.path)
        outputs = outputs_on_data(artifact, split.data, split.settings)
        fid = fidelity(outputs, split.reference)
        verdict = Verdict("calibration", cosine=fid.cosine if fid else None,
                          degenerate=degenerate(outputs, split.reference, "the original's"))
        if verdict.degenerate is not None:  # whatever it would score: NaN or all-zero outputs can score anything
            return verdict
        score = metric_of(outputs, split.data, split.metric, split.reference)
        if split.base is not None and score is not None and split.metric is not None:
            verdict.drop, verdict.metric = split.metric.drop(split.base, score.value), score.metric
        return verdict


def judge(outcome: Outcome, budget: Budget, calibration: CalibrationJudge | None) -> None:
    """Reject ``outcome`` when it is outside the budget on either split (the calibration split first)."""
    artifact = outcome.built
    outcome.verdicts = [v for v in (calibration.verdict(artifact) if calibration else None,
                                    evaluation_verdict(artifact)) if v is not None]
    for verdict in outcome.verdicts:
        reasons = verdict.reasons(budget)
        if reasons:
            outcome.status = "rejected"
            outcome.why = (f"degenerate outputs on the {verdict.split} split: {verdict.degenerate}"
                           if verdict.degenerate is not None else
                           f"outside the budget vs the original on the {verdict.split} split: " + "; ".join(reasons))
            return
