"""The one accuracy budget of the lossy steps, ``max_drop``: its meaning, and the check that holds a step's
product to it (quantize, prune; compile's low precisions use ``eval/compare.accuracy_check`` the same way).

``max_drop`` is the largest drop of the run's task metric (``--metric``; top-1 for a labelled classifier;
points for fraction metrics, raw units otherwise) of the step's product vs the step's input, both run on the
evaluation split. The old key ``max_accuracy_drop`` is still read (``base.BudgetSearchConfig.RENAMED``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from optkit.steps.base import StepContext
    from optkit.types.artifact import Artifact
    from optkit.types.records import Check

MAX_DROP_HELP = ("largest drop of the task metric (--metric; default top-1; points for fractions) vs the input "
                 "model")


def check_vs_input(ctx: StepContext, product: Artifact, max_drop: float, min_cosine: float | None,
                   parent_out: dict[str, np.ndarray] | None = None) -> Check:
    """``product`` run on the evaluation split and judged against the step's input (``parent_out``: its outputs
    there, default ``ctx.input_outputs()``): the task metric's drop within ``max_drop``, and cosine where no
    task metric judges or ``min_cosine`` is given."""
    from optkit.eval.compare import accuracy_check
    from optkit.eval.measure import outputs_on_data

    parent = parent_out if parent_out is not None else ctx.input_outputs()
    return accuracy_check(parent, outputs_on_data(product, ctx.data, ctx.settings), ctx.data, ctx.settings.metric,
                          max_drop, min_cosine)
