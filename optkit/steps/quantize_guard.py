"""The accuracy guard of ``quantize --guard`` (on when ``--max-drop`` is given): an int8 recipe that meets the
budget, else the fewest, most harmful nodes in float.

When plain static int8 misses the budget, the int8 recipes of ``quantize_recipes`` are tried first (op
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
then decides.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from optkit.types.artifact import Artifact
from optkit.types.errors import StepError
from optkit.steps.base import StepContext
from optkit.steps._quantize_modes import Candidate
from optkit.types.records import Check

if TYPE_CHECKING:
    from optkit.eval.data import EvalData


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

    if calib is None and artifact.data.get("calib"):
        calib = load_npz(artifact.data["calib"], artifact.inputs)
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


def guard(ctx: StepContext, artifact: Artifact, config, mode: str, plain: Candidate,
          build: Callable[..., Candidate], calib: EvalData | None) -> Candidate:
    import onnx

    from optkit.eval.compare import accuracy_check, check_text
    from optkit.eval.measure import outputs_on_data
    from optkit.eval.qdebug import exclusion_groups, rank_dynamic, rank_static

    data, data_name = _search_data(ctx, artifact, calib)
    parent = outputs_on_data(artifact, data, ctx.settings)

    def check(cand: Candidate) -> Check:
        art = cand.artifact  # the candidate as QuantizeStep._evaluate built it
        return accuracy_check(parent, outputs_on_data(art, data, ctx.settings), data, ctx.settings.metric,
                              config.max_drop, config.min_cosine)

    float_model = plain.path.parent / ("pre.onnx" if (plain.path.parent / "pre.onnx").is_file() else "upgraded.onnx")
    quantized = quantized_nodes(onnx.load(str(plain.path)))
    plain_check = check(plain)
    # without a task metric the guard can only judge cosine: say so everywhere instead of a drop it never measured
    budget_text = plain_check.limit
    facts: dict[str, Any] = {"budget": config.max_drop, "budget_text": budget_text, "searched_on": data_name,
                             "quantized_nodes_plain": len(quantized), "plain": _summary(plain_check), "trials": [],
                             "recipes": []}
    warning = budget_warning(config.max_drop, plain_check)
    if warning:
        ctx.ui.warn(warning)
    ctx.ui.info(f"accuracy guard: plain {mode} int8 is outside {budget_text} ({check_text(plain.check)})")
    base, recipe = plain, None
    if mode == "static":
        chosen, base, recipe = _try_recipes(ctx, artifact, config, plain, plain_check, build, check, float_model, facts)
        if chosen is not None:
            chosen.details["guard"] = facts
            return chosen
        if recipe is not None:
            quantized = quantized_nodes(onnx.load(str(base.path)))
            facts["quantized_nodes_plain"] = len(quantized)
            ctx.ui.info(f"accuracy guard: bisecting from recipe '{recipe.name}', the closest to the budget")
    with ctx.ui.status("accuracy guard: ranking layers by quantization error"):
        if mode == "static":
            ranking = rank_static(float_model, base.path, data, base.path.parent, samples=64)
        else:
            ranking = rank_dynamic(float_model, data, plain.path.parent, per_channel=config.per_channel,
                                   reduce_range=config.reduce_range)
    already = set(base.details.get("excluded") or [])
    groups = exclusion_groups(ranking, already)
    facts["groups"] = groups[:10]
    ctx.ui.info(f"accuracy guard: {len(groups)} candidate group(s) to keep float, worst: "
                f"{groups[0]['why'] if groups else 'none'}")

    started = time.perf_counter()

    def trial(k: int) -> tuple[Candidate, Check]:
        nodes = tuple(n for g in groups[:k] for n in g["nodes"])
        cand = build(nodes, recipe)
        result = check(cand)
        in_float = sum(1 for n in nodes if _was_quantized(n, quantized_set))  # groups may name untouched nodes
        facts["trials"].append({"groups": k, "nodes": in_float, **_summary(result)})
        done = len(facts["trials"])
        per_trial = (time.perf_counter() - started) / done
        ctx.ui.info(f"  guard trial {done} of at most {config.guard_max_trials}: {in_float} of {len(quantized)} node(s) "
                    f"in float -> {_summary(result)['text']} ({per_trial:.1f}s each, at most "
                    f"{per_trial * (config.guard_max_trials - done):.0f}s left)")
        return cand, result

    quantized_set = set(quantized) if mode == "static" else None  # dynamic int8 renames what it quantizes
    lo, hi, best, best_facts = 0, None, None, None
    k = 1
    while groups and len(facts["trials"]) < config.guard_max_trials:
        cand, result = trial(k)
        if result.ok:
            hi, best, best_facts = k, cand, facts["trials"][-1]
            break
        lo = k
        if k == len(groups):
            break
        k = min(2 * k, len(groups))
    while best is not None and hi - lo > 1 and len(facts["trials"]) < config.guard_max_trials:
        mid = (lo + hi) // 2
        cand, result = trial(mid)
        if result.ok:
            hi, best, best_facts = mid, cand, facts["trials"][-1]
        else:
            lo = mid
    if best is None:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: {mode} int8 cannot meet {budget_text} on the {data_name}: "
                        f"plain {facts['plain']['text']}; {facts['trials'][-1]['text'] if facts['trials'] else 'no node to exclude'}"
                        f" with {facts['trials'][-1]['nodes'] if facts['trials'] else 0} node(s) in float",
                        hint=("Raise --max-drop" if plain_check.judged_metric else "Lower --min-cosine")
                        + ", raise --guard-max-trials, try --method entropy or --per-channel, or use --mode fp16")
    kept = [n for g in groups[:hi] for n in g["nodes"] if _was_quantized(n, quantized_set)]
    facts.update({"kept_float": kept, "groups": groups[:hi], "recipe": recipe.name if recipe else None,
                  "kept_float_fraction": round(len(kept) / max(1, len(quantized)), 4), "best_trial": best_facts})
    _refuse_a_float_model(ctx, artifact, config, mode, best, kept, quantized, facts)
    best.details["guard"] = facts
    return best


MIN_INT8_SHARE = 0.5  # a "quantized" model with most of its compute nodes back in float is not what was asked for


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


def _try_recipes(ctx: StepContext, artifact: Artifact, config, plain: Candidate, plain_check: Check, build, check,
                 float_model, facts: dict) -> tuple[Candidate | None, Candidate, Any]:
    """Each applicable int8 recipe, built and judged; returns (the fastest within the budget that keeps most
    compute in int8 and beats the input, or None; the candidate closest to the budget; its recipe or None)."""
    import onnx

    from optkit.eval.measure import quick_p50s
    from optkit.steps.quantize_recipes import applicable

    plan = applicable(onnx.load(str(float_model)))
    todo = [r for r, skip in plan if skip is None]
    tried = []
    for recipe, skip in plan:
        if skip is not None:
            facts["recipes"].append({"recipe": recipe.name, "skipped": skip})
            continue
        started = time.perf_counter()
        try:
            cand = build((), recipe)
        except Exception as exc:  # a recipe ORT cannot build on this graph is reported, not fatal
            facts["recipes"].append({"recipe": recipe.name, "failed": f"{type(exc).__name__}: {str(exc)[:160]}"})
            continue
        result = check(cand)
        share = _compute_share(cand)
        entry = {"recipe": recipe.name, "why": recipe.why, **_summary(result), "int8_compute_share": round(share, 4),
                 "seconds": round(time.perf_counter() - started, 1)}
        facts["recipes"].append(entry)
        tried.append((recipe, cand, result, entry))
        ctx.ui.info(f"  guard recipe {len(tried)} of {len(todo)}: {recipe.name} -> {entry['text']}, "
                    f"{100 * share:.0f}% of compute nodes int8 ({entry['seconds']:.1f}s)")
    good = [t for t in tried if t[2].ok and _compute_share(t[1]) >= MIN_INT8_SHARE]
    if good:
        with ctx.ui.status(f"accuracy guard: timing the input and {len(good)} recipe(s) interleaved"):
            p50s = quick_p50s([artifact, *(t[1].artifact for t in good)], ctx.data, ctx.settings)
        for t, p50 in zip(good, p50s[1:]):
            t[3]["p50_ms"] = p50
        facts["input_p50_ms"] = p50s[0]
        fastest = min(zip(good, p50s[1:]), key=lambda tp: tp[1])
        if fastest[1] < p50s[0] or config.guard_allow_slower:
            recipe, cand, result, _ = fastest[0]
            facts.update({"recipe": recipe.name, "kept_float": [], "p50_ms": {
                "input": p50s[0], "guarded": fastest[1], "timing": "interleaved, batch 1"}})
            ctx.ui.info(f"accuracy guard: recipe '{recipe.name}' is within {facts['budget_text']} "
                        f"({_summary(result)['text']}) at {fastest[1]:.3f} ms vs the input's {p50s[0]:.3f} ms")
            return cand, cand, recipe
        # more float than these would not be faster either: say what was reached instead of bisecting on
        tried_text = "; ".join(f"'{t[0].name}' {p50:.3f} ms" for t, p50 in zip(good, p50s[1:]))
        raise StepError(f"quantize --max-drop {config.max_drop:g}: the int8 recipes within {facts['budget_text']} are "
                        f"not faster than the input ({tried_text}; input {p50s[0]:.3f} ms at batch 1, timed side by side)",
                        hint="Deploy the input model, try --mode dynamic, or pass --guard-allow-slower to keep the fastest")
    closest = min(tried, key=lambda t: _badness(t[2]), default=None)
    if closest is not None and _badness(closest[2]) < _badness(plain_check) and _compute_share(closest[1]) >= MIN_INT8_SHARE:
        return None, closest[1], closest[0]
    return None, plain, None


def _refuse_a_float_model(ctx: StepContext, artifact: Artifact, config, mode: str, best: Candidate, kept: list[str],
                          quantized: list[str], facts: dict) -> None:
    """The guard's result must still be an int8 model worth deploying: at least half of the quantized nodes
    and of the compute nodes stay int8, and it is faster than its input (timed side by side); otherwise exit 1 naming what it reached."""
    from optkit.eval.measure import quick_p50s

    share = 1 - len(kept) / max(1, len(quantized))
    nodes = best.details.get("nodes")
    if nodes and nodes.get("quantizable"):  # judged on the compute nodes (Conv/MatMul/Gemm) when they are counted
        share = min(share, _compute_share(best))
    best_text = (facts.get("best_trial") or facts["trials"][-1])["text"]
    compute = f", {nodes['quantized']} of {nodes['quantizable']} compute nodes int8" if nodes else ""
    reached = (f"{best_text} with {len(kept)} of {len(quantized)} node(s) in float{compute} "
               f"({100 * share:.0f}% int8)")
    if share < MIN_INT8_SHARE:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: the budget holds only with most nodes back in float: "
                        f"{reached}; that is not an int8 model",
                        hint="Raise the budget, keep op types in float with --exclude (e.g. --exclude Softmax), "
                             "or deploy the float model")
    input_ms, guarded_ms = quick_p50s([artifact, best.artifact], ctx.data, ctx.settings)
    facts["p50_ms"] = {"input": input_ms, "guarded": guarded_ms, "timing": "interleaved, batch 1"}
    if guarded_ms >= input_ms and not config.guard_allow_slower:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: {mode} int8 within the budget ({reached}) is not faster "
                        f"than its input ({guarded_ms:.3f} vs {input_ms:.3f} ms at batch 1, timed side by side)",
                        hint="Deploy the input model, try another --mode, or pass --guard-allow-slower to keep it")


def _summary(check: Check) -> dict[str, Any]:
    from optkit.eval.compare import check_text

    facts = {k: round(getattr(check, k), 5) for k in ("drop", "cosine_vs_input") if getattr(check, k) is not None}
    return {**facts, "ok": check.ok, "text": check_text(check)}
