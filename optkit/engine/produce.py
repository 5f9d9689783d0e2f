"""One step of a run: a producing step's artifact written, measured and renamed into place with its sidecar (and
the original's reference outputs) together, or a measuring step's profile; and row 0, the model as given.

A producing step writes its artifact to a temporary name; the engine measures it on the evaluation data (accuracy,
fidelity to the parent and to the original model, latency, memory); then the artifact, its sidecar and - for the
first artifact derived from a torch model - the original's reference outputs are renamed into place together. A
failure at any point leaves nothing behind.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optkit.engine.recipe import PlannedStep, Recipe
from optkit.engine.setup import guard, load_reference, probe
from optkit.engine.timing import speed_vs_input
from optkit.engine.versions import tool_versions
from optkit.eval.data import EvalData
from optkit.eval.measure import MeasureSettings, Measurement, measure, outputs_on_data
from optkit.eval.metrics import fidelity, output_stats
from optkit.steps.base import StepContext
from optkit.types.artifact import Artifact, sidecar_path
from optkit.backends.opening import open_artifact
from optkit.types.sidecar import write_sidecar_text
from optkit.types.errors import StepError
from optkit.types.files import Staging, scratch_root, sha256_file
from optkit.types.generative import GenerationMetrics
from optkit.types.ledger import Profile
from optkit.types.records import Fidelity, Metrics, ParentRef, StepRecord
from optkit.types.ui import UI

REFERENCE_SUFFIX = ".optkit-ref.npz"
Outputs = dict[str, np.ndarray]  # a model's outputs on the evaluation data, by output name
GENERATION = "text-generation"
GEN_PROMPT_LENGTHS = (128, 512)  # time to first token is measured after prompts of these lengths
GEN_NEW_TOKENS = 16  # greedy tokens per evaluation prompt compared with the original's
GEN_TIMED_TOKENS = 32  # decode steps per timed run
PPL_TEXTS, PPL_MAX_TOKENS = 32, 256  # perplexity: at most this many evaluation texts, each cut to this length


@dataclass
class Chain:
    """The artifact being worked on and what is known of its outputs on the evaluation data."""

    artifact: Artifact
    outputs: Outputs | None = None
    reference: Outputs | None = None  # the original model's outputs
    generation: GenerationMetrics | None = None  # a causal LM's original: its perplexity and greedy tokens


@dataclass
class EngineRun:
    """What every part of one run shares: the recipe and its folder, the ui, the evaluation data, the
    measurement settings (task metric included) and the chain being built."""

    recipe: Recipe
    base: Path
    ui: UI
    data: EvalData
    settings: MeasureSettings
    chain: Chain


def _record(step: str, artifact: Artifact, data: EvalData, params: dict[str, Any], details: dict[str, Any],
            parent: Artifact | None, metrics: Metrics, wall: float, notes: list[str], **extra: Any) -> StepRecord:
    return StepRecord(
        step=step, artifact=str(artifact.path), format=artifact.format,
        sha256=artifact.digest(), size_bytes=artifact.size_bytes(),
        params=params, details=details,
        parent=ParentRef(artifact=str(parent.path), sha256=parent.record.sha256 if parent.record else parent.digest())
        if parent else None,
        inputs=[t.to_dict() for t in artifact.inputs], outputs=[t.to_dict() for t in artifact.outputs],
        eval_data=data.reference(), versions=tool_versions(), metrics=metrics,
        wall_time_s=round(wall, 3), notes=notes, **extra,
    )


def _measured(run: EngineRun, artifact: Artifact, parent_outputs: Outputs | None,
              original: bool = False, step: str = "") -> tuple[Metrics, Outputs | None, list[str]]:
    data, settings, chain, ui = run.data, run.settings, run.chain, run.ui
    if not settings.enabled:
        return Metrics(), None, []

    def judge_outputs(outputs: Outputs) -> None:  # before any timing: a degenerate product is refused
        from optkit.eval.compare import refuse_degenerate

        where = data.path.name if data.path is not None else "synthetic inputs"
        if original:  # the user's model, judged alone: NaN or infinity on the evaluation data
            refuse_degenerate(outputs, None, f"the model {artifact.path.name}", users=True, samples=where)
        else:
            refuse_degenerate(outputs, parent_outputs if parent_outputs is not None else chain.reference,
                              f"step '{step}' made a degenerate {artifact.format} model", samples=where,
                              reference_name="the input's" if parent_outputs is not None else "the original's")

    with ui.status(f"measuring {artifact.format} on {data.describe()}"), guard(f"measuring {artifact.path.name}"):
        m = measure(artifact, data, settings, reference=chain.reference, self_reference=original,
                    judge_outputs=judge_outputs)
    metrics = _metrics(m, chain.reference, parent_outputs)
    from optkit.backends.generative import GENERATORS

    if GENERATION in (artifact.task, chain.artifact.task) and artifact.format in GENERATORS:  # a runtime generates
        with ui.status(f"measuring {artifact.format} generation: perplexity, greedy tokens, time to first token"), \
                guard(f"measuring {artifact.path.name} as a text generator"):
            metrics.generation = _generation(run, artifact, original)
    return metrics, m.outputs, m.notes


def _original_generation(run: EngineRun) -> GenerationMetrics | None:
    """The original causal LM's figures: kept on the chain, else read from the original's row of the lineage (a
    chain resumed from an export, or from the cache)."""
    if run.chain.generation is None:
        records = run.chain.artifact.chain()
        run.chain.generation = records[0].measured.generation if records else None
    return run.chain.generation


def _eval_texts(data: EvalData) -> list[np.ndarray]:
    """The evaluation texts' tokens (padding dropped), the perplexity's windows."""
    ids, mask = data.inputs.get("input_ids"), data.inputs.get("attention_mask")
    if ids is None:
        return []
    rows = [ids[r][mask[r].astype(bool)] if mask is not None else ids[r] for r in range(min(len(ids), PPL_TEXTS))]
    return [row[:PPL_MAX_TOKENS] for row in rows if len(row) >= 2]


def _generation(run: EngineRun, artifact: Artifact, original: bool) -> GenerationMetrics:
    """A causal LM measured per token: perplexity on the evaluation texts, greedy tokens on the evaluation prompts
    (vs the original's), time to first token and decode tokens/s at batch 1 after prompts of each length."""
    from optkit.backends.generative import open_causal_lm
    from optkit.eval.generation import generation_quality, stop_tokens, time_generation
    from optkit.steps._causal_export import prompts_of

    base = None if original else _original_generation(run)
    if not original and not artifact.lineage:  # a product before it is renamed into place: its tokenizer is the chain's
        artifact = artifact.with_(lineage=run.chain.artifact.chain(), task=run.chain.artifact.task)
    prompts = [np.asarray([p], dtype=np.int64) for p in prompts_of(run.data)]
    settings = run.settings
    with open_causal_lm(artifact, threads=settings.threads) as lm:
        quality, tokens = generation_quality(lm, _eval_texts(run.data) or [p[0] for p in prompts], prompts,
                                             GEN_NEW_TOKENS, stop=stop_tokens(artifact),
                                             reference=base.reference_tokens if base is not None else None)
        timing = time_generation([lm], GEN_PROMPT_LENGTHS, GEN_TIMED_TOKENS, budget_s=settings.budget_s,
                                 threads=settings.threads)[0]
    out = GenerationMetrics(perplexity=quality.perplexity, tokens=quality.tokens, prompts=quality.prompts,
                            new_tokens=quality.new_tokens, timing=timing)
    if original:
        out.ppl_increase, out.token_agreement, out.reference_tokens = 0.0, 1.0, tokens
    elif base is not None and base.reference_tokens is not None:
        out.ppl_increase, out.token_agreement = quality.perplexity / base.perplexity - 1.0, quality.token_agreement
    return out


def _metrics(m: Measurement, reference: Outputs | None, parent_outputs: Outputs | None) -> Metrics:
    """A ledger row's metrics from eval's measurement: the one place its results are read."""
    return Metrics(accuracy=m.accuracy, latency=m.latency, peak_memory_mb=m.peak_memory_mb,
                   output_stats=output_stats(m.outputs),
                   fidelity=fidelity(m.outputs, reference) if reference is not None else None,
                   fidelity_parent=fidelity(m.outputs, parent_outputs) if parent_outputs is not None else None)


def _measure_original(run: EngineRun) -> None:
    """Row 0 of the ledger: the model as given, measured like every later artifact."""
    chain, data = run.chain, run.data
    art = chain.artifact
    start = time.perf_counter()
    metrics, outputs, notes = _measured(run, art, None, original=True)
    chain.generation = metrics.generation
    tensor_bytes = None  # what a torch model weighs is its tensors, not its files (a config-built one has none)
    if outputs is not None:
        chain.outputs = chain.reference = outputs
        metrics.fidelity = Fidelity.model_validate(fidelity(outputs, outputs))
        if art.format == "torch":
            from optkit.backends.torch import count_macs, load_module

            module = load_module(art)
            metrics.macs = count_macs(module, data.batch(1), [i.name for i in art.inputs])
            metrics.params = sum(p.numel() for p in module.parameters())
            tensor_bytes = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    details: dict[str, Any] = {"source": art.source.to_json()}
    if tensor_bytes is not None:
        details["size"] = "bytes of the model's parameters and buffers"
    kind = f"{art.source.kind or 'torch'} model" if art.format == "torch" else f"{art.format} model as given"
    record = _record("original", art, data, {}, details, None, metrics, time.perf_counter() - start, notes,
                     summary=kind + (f", {metrics.macs / 1e6:.1f} M MACs" if metrics.macs else ""))
    if tensor_bytes is not None:
        record.size_bytes = tensor_bytes
    chain.artifact = art.with_(record=record)


def run_producing(run: EngineRun, ps: PlannedStep, output: Path, cache_key: str | None = None) -> None:
    """``ps`` run on the chain's artifact into ``output``: measured, its record made, written with its sidecar."""
    chain, data, settings, ui, base = run.chain, run.data, run.settings, run.ui, run.base
    parent = chain.artifact
    final = output.resolve()
    start = time.perf_counter()
    with Staging() as stage:
        def parent_outputs() -> Outputs:
            if chain.outputs is None:
                chain.outputs = outputs_on_data(parent, data, settings)
            return chain.outputs

        out_tmp = stage.path_for(final)
        ctx = StepContext(ui=ui, data=data, settings=settings, out_tmp=out_tmp, out_final=final,
                          parent_outputs=parent_outputs, base=base,
                          companion=lambda suffix: stage.path_for(final.with_suffix(suffix), like=out_tmp))
        with guard(f"step '{ps.step.name}'"), scratch_root(final.parent):
            result = ps.step.run(ctx, parent, ps.config)
        made, details = result.artifact, result.details
        if made is None:
            raise StepError(f"step '{ps.step.name}' made no artifact")
        if settings.enabled:
            parent_outputs()
        elif ps.step.for_speed:  # not measured: still never slower than its input without a word
            details = details.model_copy(update={"speed_vs_input": speed_vs_input(ps.step.name, parent, made, data,
                                                                                   settings, ui)})
        metrics, outputs, notes = _measured(run, made, chain.outputs, step=ps.step.name)
        parent_metrics = parent.record.measured if parent.record else Metrics()
        for key in ("macs", "params"):  # a step that changes the architecture says so; others keep the parent's
            value = getattr(details, key, None)
            value = value if value is not None else getattr(parent_metrics, key)
            if value is not None:
                setattr(metrics, key, value)
        step_time = time.perf_counter() - start

        reference = parent.reference
        if chain.reference is not None and parent.reference is None and parent.record and parent.record.step == "original":
            ref_path = final.with_name(final.name + REFERENCE_SUFFIX)
            tmp = stage.path_for(ref_path)
            arrays: dict[str, Any] = dict(chain.reference)
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
            reference = {"path": str(ref_path), "sha256": sha256_file(tmp), "eval_sha256": data.sha256}
        record = _record(ps.step.name, made, data, ps.config.model_dump(mode="json"), details.to_json(),
                         parent, metrics, step_time, notes,  # digest and size read from the staged file
                         summary=ps.step.describe(details), **({"cache_key": cache_key} if cache_key else {}))
        new = parent.derive(made, record=record, reference=reference, path=final)
        stage.write_text(sidecar_path(final), write_sidecar_text(new, final))
        stage.commit()
    if final.is_dir():  # a model folder (prune, distill): its file paths pointed into the staged folder
        new = open_artifact(final)
    chain.artifact, chain.outputs = new, outputs
    ui.info(f"[green]✓[/] {ps.step.name}: wrote {final} ({step_time:.1f}s)")


def run_measuring(run: EngineRun, ps: PlannedStep) -> Profile:
    chain, data, settings, ui = run.chain, run.data, run.settings, run.ui
    with ui.status(f"{ps.step.name}: measuring {chain.artifact.path.name}"), guard(f"step '{ps.step.name}'"):
        result = ps.step.run(StepContext(ui=ui, data=data, settings=settings), chain.artifact, ps.config)
    profile = result.profile
    if profile is None:  # a measuring step's product is its profile
        raise StepError(f"step '{ps.step.name}' measured nothing")
    outputs = result.outputs
    if outputs:  # the model measured is the user's: NaN (or, vs the original's, a collapse) is bad input, not a score
        from optkit.eval.compare import refuse_degenerate

        refuse_degenerate(outputs, chain.reference, f"the model {chain.artifact.path.name}", users=True,
                          samples=data.path.name if data.path is not None else "synthetic inputs",
                          reference_name="the original model's")
    if outputs and settings.metric is not None:  # judged vs the original, as in the ledger
        from optkit.eval.measure import metric_of

        reference = chain.reference
        if reference is None and not chain.artifact.lineage and chain.artifact.record is None:
            reference = outputs  # the model as given is its own reference (row 0 of a ledger)
        profile.accuracy = metric_of(outputs, data, settings.metric, reference)
        if profile.accuracy is None and reference is None:
            ui.warn(f"--metric {settings.metric.spec} compares with the original model's outputs, which are not "
                    f"beside {chain.artifact.path.name} any more: not measured")
    profile.fidelity = fidelity(outputs, chain.reference) if chain.reference is not None and outputs else None
    profile.task = chain.artifact.task
    return profile


def seed(seed: int) -> None:
    """Same seed, same artifacts: numpy and (when loaded) torch are seeded before each step."""
    import random
    import sys

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


class Source:
    """What the chain's first artifact needs before a step may run on it, done at most once and only
    when some step is not served from the cache: the shape probe, reference outputs, row 0."""

    def __init__(self, run: EngineRun, producing: bool) -> None:
        self.run, self.producing = run, producing
        self.source = run.chain.artifact
        self.done = False

    def prepare(self) -> None:
        run = self.run
        if self.done or run.chain.artifact is not self.source:
            return
        self.done = True
        art = self.source
        probe(art, run.data)
        run.chain.reference = load_reference(art, run.data)
        if self.producing and run.settings.enabled and art.record is None:
            run.ui.info(f"measuring the original model {art.path.name}")
            _measure_original(run)
            self.source = run.chain.artifact  # the same model, now with its ledger row


def reuse(run: EngineRun, ps: PlannedStep, output: Path, key: str) -> bool:
    """``ps``'s output from the step cache when its key matches (and the reference outputs beside it still do)."""
    from optkit.engine.cache import lookup_artifact

    chain, data, ui = run.chain, run.data, run.ui
    hit, why = lookup_artifact(output, key)
    reference = load_reference(hit, data) if hit is not None else None
    if hit is not None and hit.reference and reference is None:  # verified (sha256) as it is loaded
        hit, why = None, "the reference outputs beside it are missing or changed"
    if hit is None:
        if why:
            ui.warn(f"{ps.step.name}: cached {output.name} not reused ({why}); rebuilding")
        return False
    chain.artifact, chain.outputs, chain.reference = hit, None, reference
    built_in = hit.record.wall_time_s if hit.record is not None else None
    ui.info(f"[cyan]↺[/] {ps.step.name}: reused {output} from the cache (built in {built_in or 0:.1f}s)")
    return True


