"""The accuracy guard of ``quantize --max-drop``: keep the fewest, most harmful nodes in float.

When plain int8 drops more than the budget, the float and int8 models are compared tensor by tensor
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
from typing import Any, Callable

from optkit.core.artifact import Artifact
from optkit.core.errors import StepError
from optkit.core.step import StepContext
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
    if calib is not None and calib.labels is not None:
        return calib, "calibration split"
    if not ctx.data.synthetic and ctx.data.labels is not None:
        ctx.ui.warn("accuracy guard: no labelled calibration split, so nodes are chosen on the EVALUATION split "
                    "(the result's accuracy is optimistic)")
    return ctx.data, "evaluation split"


def guard(ctx: StepContext, artifact: Artifact, config, mode: str, plain: dict, build: Callable[[tuple], dict],
          calib: EvalData | None) -> dict:
    import onnx

    from optkit.eval.compare import accuracy_check
    from optkit.eval.measure import outputs_on_data
    from optkit.eval.qdebug import exclusion_groups, rank_dynamic, rank_static

    data, data_name = _search_data(ctx, artifact, calib)
    parent = outputs_on_data(artifact, data, ctx.settings)

    def check(cand: dict) -> dict:
        art = Artifact(path=cand["path"], format="onnx", task=artifact.task, inputs=artifact.inputs, outputs=artifact.outputs)
        return accuracy_check(parent, outputs_on_data(art, data, ctx.settings), data, artifact.task,
                              config.max_drop, config.min_cosine)

    float_model = plain["path"].parent / ("pre.onnx" if (plain["path"].parent / "pre.onnx").is_file() else "upgraded.onnx")
    with ctx.ui.status("accuracy guard: ranking layers by quantization error"):
        if mode == "static":
            ranking = rank_static(float_model, plain["path"], data, plain["path"].parent, samples=64)
        else:
            ranking = rank_dynamic(float_model, data, plain["path"].parent, per_channel=config.per_channel,
                                   reduce_range=config.reduce_range)
    already = set(plain["details"].get("excluded") or [])
    groups = exclusion_groups(ranking, already)
    quantized = quantized_nodes(onnx.load(str(plain["path"])))
    plain_check = check(plain)
    # without labels the guard can only judge cosine: say so everywhere instead of printing points it never measured
    budget_text = f"{config.max_drop:g} pt" if "drop_points" in plain_check else plain_check["limit"]
    facts: dict[str, Any] = {"budget": config.max_drop, "budget_text": budget_text, "searched_on": data_name,
                             "quantized_nodes_plain": len(quantized), "plain": _summary(plain_check), "trials": [],
                             "groups": groups[:10]}
    if "drop_points" not in plain_check:
        ctx.ui.warn(f"--max-drop {config.max_drop:g} is a top-1 budget in points, but the {data_name} has no labels: "
                    f"the guard judges {budget_text} instead (set it with --min-cosine)")
    ctx.ui.info(f"accuracy guard: plain {mode} int8 is outside {budget_text} "
                f"({_summary(plain['check'])['text']}); {len(groups)} candidate group(s), worst: "
                f"{groups[0]['why'] if groups else 'none'}")

    started = time.perf_counter()

    def trial(k: int) -> tuple[dict, dict]:
        nodes = tuple(n for g in groups[:k] for n in g["nodes"])
        cand = build(nodes)
        result = check(cand)
        facts["trials"].append({"groups": k, "nodes": len(nodes), **_summary(result)})
        done = len(facts["trials"])
        per_trial = (time.perf_counter() - started) / done
        ctx.ui.info(f"  guard trial {done} of at most {config.guard_max_trials}: {len(nodes)} of {len(quantized)} node(s) "
                    f"in float -> {_summary(result)['text']} ({per_trial:.1f}s each, at most "
                    f"{per_trial * (config.guard_max_trials - done):.0f}s left)")
        return cand, result

    lo, hi, best = 0, None, None
    k = 1
    while groups and len(facts["trials"]) < config.guard_max_trials:
        cand, result = trial(k)
        if result["ok"]:
            hi, best = k, cand
            break
        lo = k
        if k == len(groups):
            break
        k = min(2 * k, len(groups))
    while best is not None and hi - lo > 1 and len(facts["trials"]) < config.guard_max_trials:
        mid = (lo + hi) // 2
        cand, result = trial(mid)
        if result["ok"]:
            hi, best = mid, cand
        else:
            lo = mid
    if best is None:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: {mode} int8 cannot meet {budget_text} on the {data_name}: "
                        f"plain {facts['plain']['text']}; {facts['trials'][-1]['text'] if facts['trials'] else 'no node to exclude'}"
                        f" with {facts['trials'][-1]['nodes'] if facts['trials'] else 0} node(s) in float",
                        hint=("Raise --max-drop" if "drop_points" in plain_check else "Lower --min-cosine")
                        + ", raise --guard-max-trials, try --method entropy or --per-channel, or use --mode fp16")
    kept = [n for g in groups[:hi] for n in g["nodes"]]
    facts.update({"kept_float": kept, "groups": groups[:hi],
                  "kept_float_fraction": round(len(kept) / max(1, len(quantized)), 4)})
    _refuse_a_float_model(ctx, artifact, config, mode, best, kept, quantized, facts)
    best["details"]["guard"] = facts
    return best


MIN_INT8_SHARE = 0.5  # a "quantized" model with most of its compute nodes back in float is not what was asked for


def _refuse_a_float_model(ctx: StepContext, artifact: Artifact, config, mode: str, best: dict, kept: list[str],
                          quantized: list[str], facts: dict) -> None:
    """The guard's result must still be an int8 model worth deploying: at least half of the quantized nodes
    stay int8, and it is faster than its input (timed side by side); otherwise exit 1 naming what it reached."""
    from optkit.eval.measure import quick_p50s

    share = 1 - len(kept) / max(1, len(quantized))
    reached = f"{facts['trials'][-1]['text']} with {len(kept)} of {len(quantized)} node(s) in float ({100 * share:.0f}% int8)"
    if share < MIN_INT8_SHARE:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: the budget holds only with most nodes back in float: "
                        f"{reached}; that is not an int8 model",
                        hint="Raise the budget, keep op types in float with --exclude (e.g. --exclude Softmax), "
                             "or deploy the float model")
    art = Artifact(path=best["path"], format="onnx", task=artifact.task, inputs=artifact.inputs, outputs=artifact.outputs)
    input_ms, guarded_ms = quick_p50s([artifact, art], ctx.data, ctx.settings)
    facts["p50_ms"] = {"input": input_ms, "guarded": guarded_ms, "timing": "interleaved, batch 1"}
    if guarded_ms >= input_ms and not config.guard_allow_slower:
        raise StepError(f"quantize --max-drop {config.max_drop:g}: {mode} int8 within the budget ({reached}) is not faster "
                        f"than its input ({guarded_ms:.3f} vs {input_ms:.3f} ms at batch 1, timed side by side)",
                        hint="Deploy the input model, try another --mode, or pass --guard-allow-slower to keep it")


def _summary(check: dict) -> dict:
    if "drop_points" in check:
        return {"drop_points": round(check["drop_points"], 3), "ok": check["ok"],
                "text": f"top-1 drop {check['drop_points']:.2f} pt"}
    return {"cosine": check.get("cosine_vs_input"), "ok": check["ok"],
            "text": f"cosine {check.get('cosine_vs_input', float('nan')):.5f}"}
