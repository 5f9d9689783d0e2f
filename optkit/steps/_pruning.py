"""Structured channel pruning with torch-pruning's dependency graph: what ``prune`` does to a model and what
``distill`` does to derive a narrower student from its teacher (``student_width`` / ``student_macs``).

Every layer coupled to a pruned one (residual adds, BatchNorm, the next layer's inputs, a transformer's MLP
width) shrinks consistently. The layers that produce the model's outputs are never pruned (that would change
the output shape); attention projections are kept unless asked (most attention code hard-codes its head
layout); ``ChannelPruning.ignore`` names more.
"""
from __future__ import annotations

import copy
import fnmatch
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

from optkit.steps import _training as tr
from optkit.types.errors import StepError, UsageError
from optkit.types.lazy import require

if TYPE_CHECKING:
    import torch

    from optkit.eval.data import EvalData

ATTENTION_NAMES = ("query", "key", "value", "q_proj", "k_proj", "v_proj", "qkv", "in_proj", "out_proj", "out", "o_proj")


@dataclass(frozen=True)
class ChannelPruning:
    """How channels are chosen, whatever the amount: ``PruneConfig.channel_pruning()`` gives the user's choice,
    distill the defaults (the same as prune's: tests/steps/test_prune.py checks they agree)."""

    importance: Literal["l1", "l2", "taylor"] = "l2"  # taylor: first-order, needs labelled training data
    global_pruning: bool = False  # rank channels across layers (default: the same ratio in every layer)
    max_layer_ratio: float = 0.9  # global pruning: at most this fraction of any layer
    round_to: int = 8  # channel counts stay multiples of this (SIMD-friendly)
    ignore: tuple[str, ...] = ()  # module names (glob patterns) never pruned
    prune_attention: bool = False


def output_layers(module: torch.nn.Module, example: tuple[Any, ...]) -> list[torch.nn.Module]:
    """Conv/Linear modules whose output *is* a model output (pruning them would change the output shape)."""
    torch = tr.torch_module()
    from optkit.backends.torch import flatten_outputs

    produced: dict[int, Any] = {}
    hooks = [m.register_forward_hook(lambda mod, _i, out: produced.__setitem__(id(out), mod))
             for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    try:
        with torch.no_grad():
            outs = flatten_outputs(module(*example))
    finally:
        for h in hooks:
            h.remove()
    return [produced[id(o)] for o in outs if id(o) in produced]


def attention_projections(module: torch.nn.Module) -> list[torch.nn.Module]:
    """Linear layers inside attention blocks (a module with a heads attribute and q/k/v-like children)."""
    torch = tr.torch_module()
    found = []
    for m in module.modules():
        if not any(isinstance(getattr(m, a, None), int) for a in ("heads", "num_heads", "n_heads")):
            continue
        found += [c for n, c in m.named_children() if isinstance(c, torch.nn.Linear) and n in ATTENTION_NAMES]
        found += [c for c in m.modules() if isinstance(c, torch.nn.MultiheadAttention)]
    return found


def ignored_layers(module: torch.nn.Module, example: tuple[Any, ...], options: ChannelPruning) -> list[torch.nn.Module]:
    """The layers never pruned: the output layers, attention projections unless asked, and ``options.ignore``."""
    named = dict(module.named_modules())
    chosen = output_layers(module, example)
    if not options.prune_attention:
        chosen += attention_projections(module)
    for pattern in options.ignore:
        hits = [m for n, m in named.items() if n and fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise UsageError(f"--ignore '{pattern}' matches no module of the model",
                             hint=f"Module names look like: {', '.join(list(n for n in named if n)[:6])}")
        chosen += hits
    return chosen


def _importance(name: str) -> Any:
    tp = require("torch_pruning", "structured pruning")
    if name == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2)


def _taylor_gradients(model: torch.nn.Module, train: EvalData | None, example_names: list[str], batches: int = 4,
                      batch_size: int = 64) -> None:
    torch = tr.torch_module()
    from optkit.backends.torch import flatten_outputs

    if train is None or train.labels is None:
        raise UsageError("taylor importance needs labelled training data", hint="Pass --train-data FILE.npz with labels, or use --importance l2")
    model.zero_grad()
    for b in range(batches):
        feed = train.batch(batch_size, b * batch_size)
        out = flatten_outputs(model(*[torch.from_numpy(feed[n].astype("float32")) for n in example_names]))[0]
        idx = (torch.arange(batch_size) + b * batch_size) % len(train)
        torch.nn.functional.cross_entropy(out, torch.from_numpy(train.labels[idx.numpy()].astype("int64"))).backward()


def prune_structured(module: torch.nn.Module, example: tuple[Any, ...], options: ChannelPruning, ratio: float,
                     train: EvalData | None = None, names: list[str] | None = None) -> torch.nn.Module:
    """A pruned deep copy of ``module`` (torch-pruning BasePruner, one shot): ``ratio`` of each group's channels
    (of all channels, ranked across layers, with ``global_pruning``)."""
    tp = require("torch_pruning", "structured pruning")
    model = copy.deepcopy(module).eval()
    ignored = ignored_layers(model, example, options)
    with warnings.catch_warnings():  # e.g. "unwrapped parameters detected": handled by torch-pruning's default
        warnings.simplefilter("ignore")
        pruner = tp.pruner.BasePruner(
            model, example_inputs=example if len(example) > 1 else example[0], importance=_importance(options.importance),
            global_pruning=options.global_pruning, pruning_ratio=ratio, max_pruning_ratio=options.max_layer_ratio,
            ignored_layers=ignored, round_to=options.round_to if options.round_to > 1 else None,
        )
    if options.importance == "taylor":
        _taylor_gradients(model, train, names or [])
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def search_ratio(module: torch.nn.Module, example: tuple[Any, ...], options: ChannelPruning, target_macs: float,
                 base_macs: int, count: Callable[[torch.nn.Module], int | None], train: EvalData | None = None,
                 names: list[str] | None = None) -> tuple[float, torch.nn.Module, int]:
    """(ratio, pruned model, its MACs): the smallest ratio whose pruned model has <= ``target_macs`` x the MACs
    (bisection; MACs fall with the ratio)."""
    def macs_of(model: torch.nn.Module) -> int:
        macs = count(model)
        if macs is None:
            raise StepError("cannot count the MACs of a pruned model, so no ratio reaches a MACs target",
                            hint="Give the amount as a ratio or width instead")
        return macs

    target = target_macs * base_macs
    lo, hi, best = 0.0, min(0.95, options.max_layer_ratio), None
    for _ in range(12):
        mid = (lo + hi) / 2
        candidate = prune_structured(module, example, options, mid, train, names)
        macs = macs_of(candidate)
        if macs <= target:
            hi, best = mid, (mid, candidate, macs)
        else:
            lo = mid
    if best is None:
        candidate = prune_structured(module, example, options, hi, train, names)
        macs = macs_of(candidate)
        if macs > target:
            raise StepError(f"cannot reach {target_macs:.2f}x MACs: the most pruning allowed leaves "
                            f"{macs / base_macs:.2f}x", hint="Raise --target-macs, raise max_layer_ratio or --ignore fewer layers")
        best = (hi, candidate, macs)
    return best
