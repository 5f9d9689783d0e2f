"""Numeric comparison of two artifacts on the same inputs: the check every transform must pass."""
from __future__ import annotations

from typing import Any

from optkit.backends import open_runner
from optkit.types.artifact import Artifact
from optkit.types.errors import OptkitError, StepError, UsageError
from optkit.types.records import Check, Verification
from optkit.eval.data import EvalData
from optkit.eval.metrics import degenerate, fidelity, mismatch
from optkit.eval.task_metric import DEFAULT_MIN_COSINE, Metric


def verify_outputs(reference: Artifact, candidate: Artifact, data: EvalData, *, atol: float, rtol: float,
                   batch_sizes: list[int], threads: int, what: str, hint: str) -> Verification:
    """Run both on evaluation samples at each batch size; any output beyond atol + rtol*|ref| fails (atol scaled
    down for outputs below unit scale: ``eval/metrics.mismatch``), and so does a degenerate one (all zero,
    the same for every sample, or NaN where the reference's is not: ``eval/metrics.degenerate``). A reference
    (the step's input, the user's model) with NaN or infinite outputs is bad input (exit 2).

    Returns the facts of the check for the sidecar (batch sizes, worst |diff|, tolerances).
    """
    from optkit.eval.measure import static_batch

    fixed = static_batch(candidate)
    sizes = [fixed] if fixed else batch_sizes
    worst = 0.0
    with open_runner(reference, threads) as ref_runner, open_runner(candidate, threads) as cand_runner:
        for offset, bs in enumerate(sizes):
            feed = data.batch(bs, offset=offset * 7)
            ref = ref_runner.infer(feed)
            got = cand_runner.infer(feed)
            refuse_degenerate(ref, None, f"the {reference.format} model {reference.path.name}", users=True,
                              samples=f"at batch {bs}")
            refuse_degenerate(got, ref, f"{what} model", samples=f"at batch {bs}", hint=hint,
                              reference_name=f"the {reference.format} model's")
            for (name, ref_v), got_v in zip(ref.items(), got.values()):
                ok, max_abs, _ = mismatch(got_v, ref_v, atol, rtol)
                worst = max(worst, max_abs)
                if not ok:
                    raise StepError(f"{what} output '{name}' differs from the {reference.format} model it came from at batch {bs}: "
                                    f"max |diff| "
                                    f"{max_abs:.3g} exceeds atol {atol:g} + rtol {rtol:g}*|ref|", hint=hint)
    return Verification(batch_sizes=sizes, max_abs_diff=worst, atol=atol, rtol=rtol,
                        samples="synthetic" if data.synthetic else "evaluation data")


def accuracy_check(parent_out: dict, cand_out: dict, data: EvalData, metric: Metric | None, max_drop: float,
                   min_cosine: float | None) -> Check:
    """For lossy transforms (quantize, low-precision compile): the task metric's drop vs the input (reference
    metrics compare with the input's outputs) and the mean cosine to the input's outputs.

    Without a task metric cosine judges (``min_cosine``, default 0.99); with one, cosine judges too only when
    ``min_cosine`` is given."""
    from optkit.eval.measure import metric_of

    refuse_degenerate(parent_out, None, "the input model", users=True,
                      samples=data.path.name if data.path is not None else "synthetic inputs")
    fid = fidelity(cand_out, parent_out)
    result: dict[str, Any] = {"cosine_vs_input": fid.cosine if fid else None,
                              "max_abs_diff_vs_input": fid.max_abs_diff if fid else None}
    # judged before any metric, and fails whatever the metric says: NaN or all-zero outputs can score anything
    collapsed = degenerate(cand_out, parent_out, "the input's")
    limits, ok = [], collapsed is None
    if collapsed is not None:
        result["degenerate"] = collapsed
    before = metric_of(parent_out, data, metric, parent_out)
    after = metric_of(cand_out, data, metric, parent_out) if collapsed is None else None
    if metric is not None and before and after:
        drop = metric.drop(before.value, after.value)
        unit = f" {metric.unit}" if metric.unit else ""
        result.update({"metric": after.metric, "input_value": before.value, "value": after.value,
                       "drop": drop, "points": metric.points, "higher_is_better": metric.higher_is_better})
        limits.append(f"{after.metric} drop <= {max_drop:g}{unit}")
        ok = drop <= max_drop + 1e-9 * max(1.0, max_drop)
    elif metric is not None and before:
        # degenerate: the metric that would have judged is named, not run on outputs that mean nothing
        result.update({"metric": before.metric, "input_value": before.value, "points": metric.points,
                       "higher_is_better": metric.higher_is_better})
        limits.append(f"{before.metric} drop <= {max_drop:g}{' ' + metric.unit if metric.unit else ''}")
    cos_limit = min_cosine if min_cosine is not None else (None if "metric" in result else DEFAULT_MIN_COSINE)
    if cos_limit is not None:
        limits.append(f"cosine >= {cos_limit:g}")
        ok = ok and fid is not None and fid.cosine >= cos_limit
        result["min_cosine"] = cos_limit
    result.update({"limit": " and ".join(["outputs not degenerate", *limits] if collapsed else limits), "ok": ok})
    return Check.model_validate(result)


def _measured(check: Check) -> tuple[float, float, float] | None:
    """(the input's value, the output's, the drop) of the task metric that judged ``check``; None where none judged
    or the outputs were degenerate (the metric is named, not run)."""
    if check.input_value is None or check.value is None or check.drop is None:
        return None
    return check.input_value, check.value, check.drop


def check_text(check: Check) -> str:
    """What an accuracy check saw, in a few words: 'top1 drop 0.42 pt' or 'cosine 0.98731'."""
    if check.degenerate:
        return f"degenerate: {check.degenerate}"
    parts = []
    measured = _measured(check)
    if measured is not None:
        before, after, drop = measured
        unit = " pt" if check.points else ""
        parts.append(f"{check.metric} drop {drop:.2f}{unit}" if check.points and abs(drop) >= 0.1 else
                     f"{check.metric} drop {drop:.2g}{unit}" if check.points
                     else f"{check.metric} {before:.4g} -> {after:.4g}")
    if check.judged_cosine or not parts:
        cos = check.cosine_vs_input
        parts.append(f"cosine {cos:.5f}" if cos is not None else "cosine not measured")
    return ", ".join(parts)


def tolerance_error(what: str, check: Check, remedies: list[str], budget_flag: str = "--max-drop") -> StepError:
    """The failed accuracy budget as one error. ``remedies``: what the calling command really offers; the
    budget to loosen is named by what was judged (``budget_flag`` for the task metric, --min-cosine for cosine)."""
    if check.degenerate:  # no budget to loosen: the outputs carry nothing of the input's answers
        hint = "; ".join(remedies) or "Report it: a transform that loses every answer is a bug"
        return StepError(f"{what} is degenerate: {check.degenerate}; limit {check.limit}",
                         hint=hint[:1].upper() + hint[1:])
    seen, loosen = [], []
    measured = _measured(check)
    if measured is not None:
        before, after, drop = measured
        if check.points:
            seen.append(f"{'top-1' if check.metric == 'top1' else check.metric} fell {drop:.2f} points "
                        f"({100 * before:.2f}% -> {100 * after:.2f}%)")
        else:
            seen.append(f"{check.metric} went from {before:.4g} to {after:.4g}")
        if drop > 0:
            loosen.append(f"raise {budget_flag}")
    cos = check.cosine_vs_input
    if check.min_cosine is not None and (cos if cos is not None else -1.0) < check.min_cosine:
        seen.append(f"mean cosine to the input's outputs is {cos:.4f}" if cos is not None else
                    "cosine to the input's outputs could not be measured (the outputs differ in shape)")
        loosen.append("lower --min-cosine" + ("" if check.judged_metric else " (no task metric: judged by cosine; "
                                                                           "--metric picks one)"))
    hint = "; ".join([*remedies, *loosen])
    return StepError(f"{what} is outside tolerance: {'; '.join(seen)}; limit {check.limit}",
                     hint=hint[:1].upper() + hint[1:])  # not str.capitalize: it lowercases NODE_OR_OP


def refuse_degenerate(outputs: dict, reference: dict | None, what: str, *, users: bool = False, samples: str = "",
                      hint: str | None = None, reference_name: str = "the input's") -> None:
    """Raise when ``outputs`` are degenerate (``eval/metrics.degenerate``): without ``reference``, NaN or infinite
    anywhere. ``users``: they are the user's model's (its input, its data: UsageError, exit 2), else a step's
    product (StepError, exit 1). ``what`` names whose outputs; ``samples`` where they were seen."""
    reason = degenerate(outputs, reference, reference_name)
    if reason is None:
        return
    where = f" ({samples})" if samples else ""
    error: type[OptkitError] = UsageError if users else StepError
    if users and reference is None:
        hint = hint or ("Find what divides by zero or overflows in the model for these samples (e.g. an all-zero "
                        "attention mask gives 0/0 in softmax), or fix the evaluation data")
    elif users:
        hint = hint or "It lost what its original computes: rebuild it (optkit now refuses such a step), or use the original"
    raise error(f"{what}: {reason}{where}",
                hint=hint or "Report it: a transform that loses every answer is a bug; try another option or step")
