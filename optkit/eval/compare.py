"""Numeric comparison of two artifacts on the same inputs: the check every transform must pass."""
from __future__ import annotations

from typing import Any

from optkit.backends import open_runner
from optkit.core.artifact import Artifact
from optkit.core.errors import StepError
from optkit.eval.data import EvalData
from optkit.eval.metrics import fidelity, mismatch


def verify_outputs(reference: Artifact, candidate: Artifact, data: EvalData, *, atol: float, rtol: float,
                   batch_sizes: list[int], threads: int, what: str, hint: str) -> dict[str, Any]:
    """Run both on evaluation samples at each batch size; any output beyond atol + rtol*|ref| fails.

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
            for (name, ref_v), got_v in zip(ref.items(), got.values()):
                ok, max_abs, _ = mismatch(got_v, ref_v, atol, rtol)
                worst = max(worst, max_abs)
                if not ok:
                    raise StepError(f"{what} output '{name}' differs from the {reference.format} model it came from at batch {bs}: "
                                    f"max |diff| "
                                    f"{max_abs:.3g} exceeds atol {atol:g} + rtol {rtol:g}*|ref|", hint=hint)
    return {"batch_sizes": sizes, "max_abs_diff": worst, "atol": atol, "rtol": rtol,
            "samples": "synthetic" if data.synthetic else "evaluation data"}


def accuracy_check(parent_out: dict, cand_out: dict, data: EvalData, task: str, max_drop_points: float,
                   min_cosine: float) -> dict[str, Any]:
    """For lossy transforms (quantize, low-precision compile): top-1 drop vs the input, or cosine without labels."""
    from optkit.eval.measure import accuracy_of

    fid = fidelity(cand_out, parent_out) or {}
    parent_acc, cand_acc = accuracy_of(parent_out, data, task), accuracy_of(cand_out, data, task)
    result: dict[str, Any] = {"cosine_vs_input": fid.get("cosine"), "max_abs_diff_vs_input": fid.get("max_abs_diff")}
    if parent_acc and cand_acc:
        drop = 100 * (parent_acc["value"] - cand_acc["value"])
        result.update({"input_accuracy": parent_acc["value"], "accuracy": cand_acc["value"], "drop_points": drop,
                       "limit": f"drop <= {max_drop_points} points", "ok": drop <= max_drop_points})
    else:
        cos = fid.get("cosine", -1.0)
        result.update({"limit": f"cosine >= {min_cosine}", "ok": cos >= min_cosine})
    return result


def tolerance_error(what: str, check: dict[str, Any], remedies: list[str]) -> StepError:
    """The failed accuracy budget as one error. ``remedies``: what the calling command really offers; the
    budget to loosen is named by what was judged (labels: --max-accuracy-drop; without: --min-cosine)."""
    if "drop_points" in check:
        seen = (f"top-1 fell {check['drop_points']:.2f} points "
                f"({100 * check['input_accuracy']:.2f}% -> {100 * check['accuracy']:.2f}%)")
        loosen = "raise --max-accuracy-drop"
    else:
        seen = f"mean cosine to the input's outputs is {check['cosine_vs_input']:.4f}"
        loosen = "lower --min-cosine (no labels: judged by cosine)"
    return StepError(f"{what} is outside tolerance: {seen}; limit {check['limit']}",
                     hint="; ".join([*remedies, loosen]).capitalize())
