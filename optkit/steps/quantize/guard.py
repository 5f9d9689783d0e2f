"""The accuracy guard of ``quantize --guard`` (on when ``--max-drop`` is given): an int8 recipe that meets the
budget, else the fewest, most harmful nodes in float.

When plain static int8 misses the budget, the int8 recipes of ``recipes.py`` are tried first (op
types quantized, activation x activation MatMuls float, percentile calibration, symmetric activations,
SmoothQuant, LayerNorm-fed MatMuls float), each measured on the task metric; the fastest within the
budget (timed side by side with the input) wins. When none is within it, the float and int8 models of
the one that came closest are compared tensor by tensor
(``optkit.eval.qdebug``), the quantized nodes are grouped by the tensor whose QDQ pair they create
and ranked worst first, and the top groups go back to float: 1, 2, 4, ... groups until the budget
holds, then a bisection between the last failing and the first passing count, so the result keeps
as many nodes int8 as the budget allows within ``guard_max_trials`` re-quantizations.

Choices are made on the labelled calibration split when there is one, so the evaluation split that
judges the result is not also the one that tuned it; the step's usual check on the evaluation split
then decides. What the guard did is kept as ``GuardFacts`` (the ledger's ``details.guard``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from optkit.steps.base import StepContext
from optkit.steps.quantize.config import QuantizeConfig
from optkit.steps.quantize.modes import Candidate
from optkit.steps.quantize.recipes import Int8Recipe
from optkit.types.artifact import Artifact
from optkit.types.errors import StepError
from optkit.types.records import Check

if TYPE_CHECKING:
    import numpy as np

    from optkit.eval.data import EvalData

Build = Callable[[tuple[str, ...], "Int8Recipe | None"], Candidate]  # (nodes kept float, recipe) -> a judged candidate
MIN_INT8_SHARE = 0.5  # a "quantized" model with most of its compute nodes back in float is not what was asked for
_SHARED = ("budget", "budget_text", "searched_on", "quantized_nodes_plain", "plain", "trials", "recipes")


@dataclass
class GuardFacts:
    """What the guard tried and reached, for the ledger (``QuantizeDetails.guard``). ``to_json`` writes the keys
    earlier versions wrote, in their order: a recipe's win, or the bisection's (which has ``groups``)."""

    budget: float
    budget_text: str  # the limit as judged: the task metric's drop, or cosine without a metric
    searched_on: str
    quantized_nodes_plain: int
    plain: dict[str, Any]  # _summary of the plain int8 candidate's check
    trials: list[dict[str, Any]] = field(default_factory=list)  # the bisection's re-quantizations
    recipes: list[dict[str, Any]] = field(default_factory=list)  # each int8 recipe: tried, skipped or failed
    input_p50_ms: float | None = None  # a recipe's win: the input timed beside the recipes within the budget
    groups: list[dict[str, Any]] | None = None  # the bisection: node groups ranked worst first (then those kept)
    recipe: str | None = None
    kept_float: list[str] = field(default_factory=list)
    kept_float_fraction: float | None = None
    best_trial: dict[str, Any] | None = None
    p50_ms: dict[str, Any] | None = None  # the result and its input, timed side by side

    def to_json(self) -> dict[str, Any]:
        tail = (("input_p50_ms", "recipe", "kept_float") if self.groups is None else
                ("groups", "kept_float", "recipe", "kept_float_fraction", "best_trial"))
        return {k: getattr(self, k) for k in (*_SHARED, *tail, "p50_ms")}


@dataclass
class GuardSearch:
    """One guard run over one mode: what it judges on (``data``, the input's ``parent`` outputs there), the
    float model the ranking reads, the nodes plain int8 quantized, and the facts so far."""

    ctx: StepContext
    artifact: Artifact
    config: QuantizeConfig
    mode: str
    build: Build
    data: EvalData
    parent: dict[str, np.ndarray]
    float_model: Path
    quantized: list[str]
    plain_check: Check
    facts: GuardFacts
    started: float = field(default_factory=time.perf_counter)

    def check(self, cand: Candidate) -> Check:
        """``cand`` (as ``modes.evaluate`` built it) judged on the search data against the input."""
        return _judge(self.ctx, self.config, self.data, self.parent, cand)

    @property
    def quantized_set(self) -> set[str] | None:
        return set(self.quantized) if self.mode == "static" else None  # dynamic int8 renames what it quantizes

    def trial(self, groups: list[dict[str, Any]], k: int, recipe: Int8Recipe | None) -> tuple[Candidate, Check]:
        """The top ``k`` groups in float: built, judged, recorded and said."""
        nodes = tuple(n for g in groups[:k] for n in g["nodes"])
        cand = self.build(nodes, recipe)
        result = self.check(cand)
        in_float = sum(1 for n in nodes if _was_quantized(n, self.quantized_set))  # groups may name untouched nodes
        self.facts.trials.append({"groups": k, "nodes": in_float, **_summary(result)})
        done, most = len(self.facts.trials), self.config.guard_max_trials
        per_trial = (time.perf_counter() - self.started) / done
        self.ctx.ui.info(f"  guard trial {done} of at most {most}: {in_float} of {len(self.quantized)} node(s) "
                         f"in float -> {_summary(result)['text']} ({per_trial:.1f}s each, at most "
                         f"{per_trial * (most - done):.0f}s left)")
        return cand, result


def quantized_nodes(model) -> list[str]:
    """Nodes running on quantized inputs (QDQ: fed by DequantizeLinear; dynamic: integer ops)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    names = []
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"):
            continue
        if n.op_type in ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv") or any(
                producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input):
            names.append(n.name)
    return names


def _search_data(ctx: StepContext, artifact: Artifact, calib: EvalData | None) -> tuple[EvalData, str]:
    from optkit.eval.data import load_npz

    if calib is None and artifact.calib_data:
        calib = load_npz(artifact.calib_data, artifact.inputs)
    metric = ctx.settings.metric
    if calib is not None and (calib.labels is not None or metric is None or not metric.needs_labels):
        return calib, "calibration split"
    if not ctx.data.synthetic:
        ctx.ui.warn("accuracy guard: no labelled calibration split, so nodes are chosen on the EVALUATION split "
                    "(the result's accuracy is optimistic)")
    return ctx.data, "evaluation split"


def budget_warning(max_drop: float, check: Check) -> str | None:
    """What to say when ``--max-drop`` budgets nothing: the check judged no task metric (no labels, no --metric),
    so the guard judges cosine. None when a metric judged (the check's typed field, not a dict key)."""
    if check.judged_metric:
        return None
    judged = f"cosine >= {check.min_cosine:g}" if check.min_cosine is not None else check.limit
    return (f"--max-drop {max_drop:g} is a budget on the task metric, and there is none (no labels, no --metric): "
            f"the guard judges {judged} instead (set it with --min-cosine)")


def guard(ctx: StepContext, artifact: Artifact, config: QuantizeConfig, mode: str, plain: Candidate,
          build: Build, calib: EvalData | None) -> Candidate:
    """The candidate within the budget (see the module docstring), its ``details["guard"]`` set; StepError when
    none is, or when the one found is mostly float or not faster than the input."""
    import onnx

    search = _start(ctx, artifact, config, mode, plain, build, calib)
    base, recipe = plain, None
    if mode == "static":
        chosen, base, recipe = _try_recipes(search, plain)
        if chosen is not None:
            chosen.details["guard"] = search.facts.to_json()
            return chosen
        if recipe is not None:
            search.quantized = quantized_nodes(onnx.load(str(base.path)))
            search.facts.quantized_nodes_plain = len(search.quantized)
            ctx.ui.info(f"accuracy guard: bisecting from recipe '{recipe.name}', the closest to the budget")
    groups = _rank(search, base, plain)
    best, hi = _bisect(search, groups, recipe)
    if best is None:
        raise _out_of_reach(search)
    kept = [n for g in groups[:hi] for n in g["nodes"] if _was_quantized(n, search.quantized_set)]
    facts = search.facts
    facts.groups, facts.kept_float, facts.recipe = groups[:hi], kept, recipe.name if recipe else None
    facts.kept_float_fraction = round(len(kept) / max(1, len(search.quantized)), 4)
    _refuse_a_float_model(ctx, artifact, config, mode, best, kept, search.quantized, facts)
    best.details["guard"] = facts.to_json()
    return best


def _start(ctx: StepContext, artifact: Artifact, config: QuantizeConfig, mode: str, plain: Candidate, build: Build,
           calib: EvalData | None) -> GuardSearch:
    """The search set up: its data, the input's outputs there, plain int8 judged on it (and said so)."""
    import onnx

    from optkit.eval.compare import check_text
    from optkit.eval.measure import outputs_on_data

    data, data_name = _search_data(ctx, artifact, calib)
    parent = outputs_on_data(artifact, data, ctx.settings)
    folder = plain.path.parent
    float_model = folder / ("pre.onnx" if (folder / "pre.onnx").is_file() else "upgraded.onnx")
    quantized = quantized_nodes(onnx.load(str(plain.path)))
    plain_check = _judge(ctx, config, data, parent, plain)
    # without a task metric the guard can only judge cosine: say so everywhere instead of a drop it never measured
    facts = GuardFacts(config.max_drop, plain_check.limit, data_name, len(quantized), _summary(plain_check))
    warning = budget_warning(config.max_drop, plain_check)
    if warning:
        ctx.ui.warn(warning)
    ctx.ui.info(f"accuracy guard: plain {mode} int8 is outside {plain_check.limit} ({check_text(plain.check)})")
    return GuardSearch(ctx, artifact, config, mode, build, data, parent, float_model, quantized, plain_check, facts)


def _judge(ctx: StepContext, config: QuantizeConfig, data: EvalData, parent: dict[str, np.ndarray],
           cand: Candidate) -> Check:
    from optkit.eval.compare import accuracy_check
    from optkit.eval.measure import outputs_on_data

    return accuracy_check(parent, outputs_on_data(cand.artifact, data, ctx.settings), data, ctx.settings.metric,
                          config.max_drop, config.min_cosine)


def _rank(search: GuardSearch, base: Candidate, plain: Candidate) -> list[dict[str, Any]]:
    """Groups of nodes to keep float, worst quantization error first (those already excluded left out)."""
    from optkit.eval.qdebug import exclusion_groups, rank_dynamic, rank_static

    with search.ctx.ui.status("accuracy guard: ranking layers by quantization error"):
        if search.mode == "static":
            ranking = rank_static(search.float_model, base.path, search.data, base.path.parent, samples=64)
        else:
            ranking = rank_dynamic(search.float_model, search.data, plain.path.parent,
                                   per_channel=search.config.per_channel, reduce_range=search.config.reduce_range)
    groups = exclusion_groups(ranking, set(base.details.get("excluded") or []))
    search.facts.groups = groups[:10]
    search.ctx.ui.info(f"accuracy guard: {len(groups)} candidate group(s) to keep float, worst: "
                       f"{groups[0]['why'] if groups else 'none'}")
    return groups


def _bisect(search: GuardSearch, groups: list[dict[str, Any]], recipe: Int8Recipe | None) -> tuple[Candidate | None, int]:
    """1, 2, 4, ... groups in float until the budget holds, then bisection down to the fewest that hold, within
    ``guard_max_trials``: (the best candidate or None, its group count)."""
    trials, most = search.facts.trials, search.config.guard_max_trials
    search.started = time.perf_counter()
    lo, hi, best, k = 0, 0, None, 1
    while groups and len(trials) < most:
        cand, result = search.trial(groups, k, recipe)
        if result.ok:
            hi, best, search.facts.best_trial = k, cand, trials[-1]
            break
        lo = k
        if k == len(groups):
            break
        k = min(2 * k, len(groups))
    while best is not None and hi - lo > 1 and len(trials) < most:
        mid = (lo + hi) // 2
        cand, result = search.trial(groups, mid, recipe)
        if result.ok:
            hi, best, search.facts.best_trial = mid, cand, trials[-1]
        else:
            lo = mid
    return best, hi


def _out_of_reach(search: GuardSearch) -> StepError:
    facts, config = search.facts, search.config
    last = facts.trials[-1] if facts.trials else None
    return StepError(f"quantize --max-drop {config.max_drop:g}: {search.mode} int8 cannot meet {facts.budget_text} on "
                     f"the {facts.searched_on}: plain {facts.plain['text']}; "
                     f"{last['text'] if last else 'no node to exclude'} with {last['nodes'] if last else 0} node(s) "
                     f"in float",
                     hint=("Raise --max-drop" if search.plain_check.judged_metric else "Lower --min-cosine")
                     + ", raise --guard-max-trials, try --method entropy or --per-channel, or use --mode fp16")


def _was_quantized(name: str, quantized: set[str] | None) -> bool:
    """Whether a node of the float model got Q/DQ inputs (QDQ keeps names; None: cannot tell, count it)."""
    return quantized is None or name in quantized


def _badness(check: Check) -> float:
    """How far a check is from passing, comparable between candidates: the metric's drop, else -cosine (degenerate
    outputs: as far as it gets)."""
    if check.degenerate:
        return float("inf")
    return check.drop if check.drop is not None else -(check.cosine_vs_input or -1.0)


def _compute_share(cand: Candidate) -> float:
    nodes = cand.details.get("nodes") or {}
    return nodes.get("quantized", 0) / max(1, nodes.get("quantizable", 0))


@dataclass
class _Tried:
    """An int8 recipe built and judged on the search data; ``entry`` is its line in ``GuardFacts.recipes``."""

    recipe: Int8Recipe
    cand: Candidate
    result: Check
    entry: dict[str, Any]


def _try_recipes(search: GuardSearch, plain: Candidate) -> tuple[Candidate | None, Candidate, Int8Recipe | None]:
    """Each applicable int8 recipe, built and judged; returns (the fastest within the budget that keeps most
    compute in int8 and beats the input, or None; the candidate closest to the budget; its recipe or None)."""
    import onnx

    from optkit.steps.quantize.recipes import applicable

    plan = applicable(onnx.load(str(search.float_model)))
    todo = [r for r, skip in plan if skip is None]
    recipes, tried = search.facts.recipes, []
    for recipe, skip in plan:
        if skip is not None:
            recipes.append({"recipe": recipe.name, "skipped": skip})
            continue
        started = time.perf_counter()
        try:
            cand = search.build((), recipe)
        except Exception as exc:  # a recipe ORT cannot build on this graph is reported, not fatal
            recipes.append({"recipe": recipe.name, "failed": f"{type(exc).__name__}: {str(exc)[:160]}"})
            continue
        result = search.check(cand)
        share = _compute_share(cand)
        entry = {"recipe": recipe.name, "why": recipe.why, **_summary(result), "int8_compute_share": round(share, 4),
                 "seconds": round(time.perf_counter() - started, 1)}
        recipes.append(entry)
        tried.append(_Tried(recipe, cand, result, entry))
        search.ctx.ui.info(f"  guard recipe {len(tried)} of {len(todo)}: {recipe.name} -> {entry['text']}, "
                           f"{100 * share:.0f}% of compute nodes int8 ({entry['seconds']:.1f}s)")
    good = [t for t in tried if t.result.ok and _compute_share(t.cand) >= MIN_INT8_SHARE]
    if good:
        chosen = _fastest_recipe(search, good)
        return chosen.cand, chosen.cand, chosen.recipe
    closest = min(tried, key=lambda t: _badness(t.result), default=None)
    if closest is not None and _badness(closest.result) < _badness(search.plain_check) \
            and _compute_share(closest.cand) >= MIN_INT8_SHARE:
        return None, closest.cand, closest.recipe
    return None, plain, None


def _fastest_recipe(search: GuardSearch, good: list[_Tried]) -> _Tried:
    """The fastest recipe within the budget, timed side by side with the input; StepError when it is not faster
    (more float would not be faster either: say what was reached instead of bisecting on)."""
    from optkit.eval.measure import quick_p50s

    ctx, facts = search.ctx, search.facts
    with ctx.ui.status(f"accuracy guard: timing the input and {len(good)} recipe(s) interleaved"):
        p50s = quick_p50s([search.artifact, *(t.cand.artifact for t in good)], ctx.data, ctx.settings)
    for t, p50 in zip(good, p50s[1:]):
        t.entry["p50_ms"] = p50
    facts.input_p50_ms = p50s[0]
    fastest, fastest_ms = min(zip(good, p50s[1:]), key=lambda tp: tp[1])
    if fastest_ms < p50s[0] or search.config.guard_allow_slower:
        facts.recipe, facts.kept_float = fastest.recipe.name, []
        facts.p50_ms = {"input": p50s[0], "guarded": fastest_ms, "timing": "interleaved, batch 1"}
        ctx.ui.info(f"accuracy guard: recipe '{fastest.recipe.name}' is within {facts.budget_text} "
                    f"({_summary(fastest.result)['text']}) at {fastest_ms:.3f} ms vs the input's {p50s[0]:.3f} ms")
        return fastest
    tried_text = "; ".join(f"'{t.recipe.name}' {p50:.3f} ms" for t, p50 in zip(good, p50s[1:]))
    raise StepError(f"quantize --max-drop {search.config.max_drop:g}: the int8 recipes within {facts.budget_text} are "
                    f"not faster than the input ({tried_text}; input {p50s[0]:.3f} ms at batch 1, timed side by side)",
                    hint="Deploy the input model, try --mode dynamic, or pass --guard-allow-slower to keep the fastest")


def _refuse_a_float_model(ctx: StepContext, artifact: Artifact, config: QuantizeConfig, mode: str, best: Candidate,
                          kept: list[str], quantized: list[str], facts: GuardFacts) -> None:
    """The guard's result must still be an int8 model worth deploying: at least half of the quantized nodes
    and of the compute nodes stay int8, and it is faster than its input (timed side by side); otherwise exit 1 naming what it reached."""
    from optkit.eval.measure import quick_p50s

    share = 1 - len(kept) / max(1, len(quantized))
    nodes = best.details.get("nodes")
    if nodes and nodes.get("quantizable"):  # judged on the compute nodes (Conv/MatMul/Gemm) when they are counted
        share = min(share, _compute_share(best))
    best_text = (facts.best_trial or facts.trials[-1])["text"]
    compute = f", {nodes['quantized']} of {nodes['quantizable']} compute nodes int8" if nodes else ""
    reached = (f"{best_text} with {len(kept)} of {len(quantized)} node(s) in float{compute} "
               f"({100 * share:.0f}% int8)")
    if share < MIN_INT8_SHARE:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: the budget holds only with most nodes back in float: "
                        f"{reached}; that is not an int8 model",
                        hint="Raise the budget, keep op types in float with --exclude (e.g. --exclude Softmax), "
                             "or deploy the float model")
    input_ms, guarded_ms = quick_p50s([artifact, best.artifact], ctx.data, ctx.settings)
    facts.p50_ms = {"input": input_ms, "guarded": guarded_ms, "timing": "interleaved, batch 1"}
    if guarded_ms >= input_ms and not config.guard_allow_slower:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: {mode} int8 within the budget ({reached}) is not faster "
                        f"than its input ({guarded_ms:.3f} vs {input_ms:.3f} ms at batch 1, timed side by side)",
                        hint="Deploy the input model, try another --mode, or pass --guard-allow-slower to keep it")


def _summary(check: Check) -> dict[str, Any]:
    from optkit.eval.compare import check_text

    facts = {k: round(getattr(check, k), 5) for k in ("drop", "cosine_vs_input") if getattr(check, k) is not None}
    return {**facts, "ok": check.ok, "text": check_text(check)}
