"""Numeric comparison of two artifacts on the same inputs: the check every transform must pass."""
from __future__ import annotations

from typing import Any

from optkit.backends import open_runner
from optkit.core.artifact import Artifact
from optkit.core.errors import StepError
from optkit.eval.data import EvalData
from optkit.eval.metrics import mismatch


def verify_outputs(reference: Artifact, candidate: Artifact, data: EvalData, *, atol: float, rtol: float,
                   batch_sizes: list[int], threads: int, what: str, hint: str) -> dict[str, Any]:
    """Run both on evaluation samples at each batch size; any output beyond atol + rtol*|ref| fails.

    Returns the facts of the check for the sidecar (batch sizes, worst |diff|, tolerances).
    """
    fixed = [i.shape[0] for i in candidate.inputs if i.shape and isinstance(i.shape[0], int)]
    sizes = [fixed[0]] if fixed else batch_sizes
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
