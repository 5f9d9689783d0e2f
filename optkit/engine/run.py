"""The engine: run a recipe's steps in order, measure every product, write artifacts atomically.

Commands and ``optkit run`` both end here. For each producing step: the step writes its artifact
to a temporary name; the engine measures it on the evaluation data (accuracy, fidelity to the
parent and to the original model, latency, memory); then the artifact, its sidecar and - for the
first artifact derived from a torch model - the original's reference outputs are renamed into
place together. A failure at any point leaves nothing behind.
"""
from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from optkit.types.artifact import Artifact, sidecar_path
from optkit.backends.opening import open_artifact
from optkit.types.sidecar import write_sidecar_text
from optkit.types.records import Fidelity, Metrics, ParentRef, StepRecord
from optkit.types.errors import StepError, UsageError
from optkit.types.files import Staging, scratch_root, sha256_file
from optkit.types.runfolder import build_lock
from optkit.engine.recipe import PlannedStep, Recipe, plan
from optkit.steps.base import StepContext
from optkit.types.ui import UI
from optkit.eval.data import EvalData
from optkit.eval.measure import MeasureSettings, measure, outputs_on_data
from optkit.eval.metrics import fidelity, output_stats
from optkit.eval.task_metric import resolve_metric
from optkit.engine.setup import (check_outputs, checked_settings, data_for, guard, import_factory_first, load_reference,
                                 open_source, probe, settings_of, with_metric)
from optkit.engine.timing import LEDGER_TIMING_FILE, LedgerTiming, speed_vs_input, timed_ledger

REFERENCE_SUFFIX = ".optkit-ref.npz"
_VERSIONED = ("optkit", "torch", "torch-pruning", "onnx", "onnxruntime", "onnxscript", "numpy")
_BACKENDS = ("onnxslim", "onnxsim", "openvino", "nncf", "neural-compressor", "onnxruntime-gpu", "tensorrt",
             "litert-torch", "ai-edge-litert", "ai-edge-quantizer")


def tool_versions(all_backends: bool = False) -> dict[str, str]:
    """Versions recorded in every sidecar; ``all_backends`` adds the optional ones (cache keys, manifests)."""
    versions = {"python": platform.python_version()}
    for dist in _VERSIONED + (_BACKENDS if all_backends else ()):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


@dataclass
class RunResult:
    final: Artifact | None
    profiles: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    cached: list[int] = field(default_factory=list)  # indices of steps reused from the cache
    written: list[Path] = field(default_factory=list)  # every file of every step's output (built or reused)
    # the ledger's latency: one interleaved pass over every row of the final chain at the end of the run
    # (None for a row whose artifact could not be opened again); the sidecars keep step-time figures
    ledger_latency: list[list[dict[str, Any]] | None] | None = None
    timing_reused_from: str | None = None  # when the ledger's figures were measured, if an earlier run's were reused


@dataclass
class _Chain:
    """The artifact being worked on and what is known of its outputs on the evaluation data."""

    artifact: Artifact
    outputs: dict[str, np.ndarray] | None = None
    reference: dict[str, np.ndarray] | None = None  # the original model's outputs


@dataclass
class EngineRun:
    """What every part of one run shares: the recipe and its folder, the ui, the evaluation data, the
    measurement settings (task metric included) and the chain being built."""

    recipe: Recipe
    base: Path
    ui: UI
    data: EvalData
    settings: MeasureSettings
    chain: _Chain


def _record(step: str, artifact: Artifact, data: EvalData, params: dict, details: dict,
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


def _measured(run: EngineRun, artifact: Artifact, parent_outputs: dict | None,
              original: bool = False, step: str = "") -> tuple[Metrics, dict | None, list[str]]:
    data, settings, chain, ui = run.data, run.settings, run.chain, run.ui
    if not settings.enabled:
        return Metrics(), None, []

    def judge_outputs(outputs: dict[str, np.ndarray]) -> None:  # before any timing: a degenerate product is refused
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
    metrics = Metrics.model_validate({
        **m.metrics(), "output_stats": output_stats(m.outputs),
        "fidelity": fidelity(m.outputs, chain.reference) if chain.reference is not None else None,
        "fidelity_parent": fidelity(m.outputs, parent_outputs) if parent_outputs is not None else None})
    return metrics, m.outputs, m.notes


def _measure_original(run: EngineRun) -> None:
    """Row 0 of the ledger: the model as given, measured like every later artifact."""
    chain, data = run.chain, run.data
    art = chain.artifact
    start = time.perf_counter()
    metrics, outputs, notes = _measured(run, art, None, original=True)
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
    details: dict[str, Any] = {"source": {k: v for k, v in art.source.items() if v}}
    if tensor_bytes is not None:
        details["size"] = "bytes of the model's parameters and buffers"
    kind = f"{art.source.get('kind', 'torch')} model" if art.format == "torch" else f"{art.format} model as given"
    record = _record("original", art, data, {}, details, None, metrics, time.perf_counter() - start, notes,
                     summary=kind + (f", {metrics.macs / 1e6:.1f} M MACs" if metrics.macs else ""))
    if tensor_bytes is not None:
        record.size_bytes = tensor_bytes
    chain.artifact = art.with_(record=record)


def _run_producing(run: EngineRun, ps: PlannedStep, cache_key: str | None = None) -> None:
    chain, data, settings, ui, base = run.chain, run.data, run.settings, run.ui, run.base
    parent = chain.artifact
    final = ps.output.resolve()
    start = time.perf_counter()
    with Staging() as stage:
        def parent_outputs() -> dict[str, np.ndarray]:
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
            with open(tmp, "wb") as fh:
                np.savez(fh, **chain.reference)
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


def _run_measuring(run: EngineRun, ps: PlannedStep) -> dict:
    chain, data, settings, ui = run.chain, run.data, run.settings, run.ui
    with ui.status(f"{ps.step.name}: measuring {chain.artifact.path.name}"), guard(f"step '{ps.step.name}'"):
        result = ps.step.run(StepContext(ui=ui, data=data, settings=settings), chain.artifact, ps.config)
    profile = result.profile
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
        profile["accuracy"] = metric_of(outputs, data, settings.metric, reference)
        if profile["accuracy"] is None and reference is None:
            ui.warn(f"--metric {settings.metric.spec} compares with the original model's outputs, which are not "
                    f"beside {chain.artifact.path.name} any more: not measured")
    profile["fidelity"] = fidelity(outputs, chain.reference) if chain.reference is not None and outputs else None
    profile["task"] = chain.artifact.task
    return profile


def _seed(seed: int) -> None:
    """Same seed, same artifacts: numpy and (when loaded) torch are seeded before each step."""
    import random
    import sys

    random.seed(seed)
    np.random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


class _Source:
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


def _reuse(run: EngineRun, ps: PlannedStep, key: str) -> bool:
    from optkit.engine.cache import lookup_artifact

    chain, data, ui = run.chain, run.data, run.ui
    hit, why = lookup_artifact(ps.output, key)
    reference = load_reference(hit, data) if hit is not None else None
    if hit is not None and hit.reference and reference is None:  # verified (sha256) as it is loaded
        hit, why = None, "the reference outputs beside it are missing or changed"
    if hit is None:
        if why:
            ui.warn(f"{ps.step.name}: cached {ps.output.name} not reused ({why}); rebuilding")
        return False
    chain.artifact, chain.outputs, chain.reference = hit, None, reference
    ui.info(f"[cyan]↺[/] {ps.step.name}: reused {ps.output} from the cache (built in {hit.record.wall_time_s or 0:.1f}s)")
    return True


def run_recipe(recipe: Recipe, base: Path, ui: UI, *, use_cache: bool = False) -> RunResult:
    """Run the recipe's steps (what a command does); a failed step raises its ``StepError``."""
    result, error = collect_run(recipe, base, ui, use_cache=use_cache)
    if error is not None:
        raise error
    return result


class NotCached(Exception):
    """``collect_run(cache_only=True)`` met a step the cache cannot serve (nothing was built or measured)."""


def collect_run(recipe: Recipe, base: Path, ui: UI, *, use_cache: bool = False, ledger_timing: bool = True,
                retime: bool = False, cache_only: bool = False) -> tuple[RunResult, StepError | None]:
    """Run the recipe's steps; with ``use_cache`` (``optkit run``) a step whose inputs did not change is reused;
    ``ledger_timing``: time every row again in one interleaved pass at the end (optimize times its own way); with
    ``use_cache``, when every step came from the cache, the last pass's figures are reused unless ``retime``;
    ``cache_only``: raise ``NotCached`` at the first step the cache cannot serve, before anything is built.

    A failed step ends the run and comes back beside what was finished before it (for the report), not raised;
    a bad recipe or input is raised before anything runs."""
    from optkit.engine import cache

    started = time.perf_counter()
    steps = plan(recipe, base)  # every step and option validated before anything runs
    settings = settings_of(recipe)
    chain = _Chain(artifact=open_source(recipe, base))
    check_outputs(recipe, steps, chain.artifact, ui)
    import_factory_first(chain.artifact)
    fmt = chain.artifact.format
    for ps in steps:
        if fmt not in ps.step.input_formats(ps.config):
            raise UsageError(f"steps[{ps.index}] ({ps.step.name}) takes {' or '.join(ps.step.input_formats(ps.config))} models, "
                             f"but it would get {fmt}", hint="Reorder the steps or start from another model")
        fmt = ps.step.output_format(ps.config)[0] or fmt
    for ps in steps:
        ps.step.precheck(ps.config, chain.artifact, base)
    metric = resolve_metric(recipe.metric, base)  # a bad --metric is reported before the data is read
    data = data_for(chain.artifact, ui)
    settings = with_metric(checked_settings(settings, data, chain.artifact, ui), metric, chain.artifact, data)
    run = EngineRun(recipe, base, ui, data, settings, chain)
    source = _Source(run, any(ps.output is not None for ps in steps))
    settings_facts = {**recipe.measure.model_dump(mode="json"), "eval_batch_size": settings.eval_batch_size}
    if recipe.metric is not None:  # what every accuracy budget judged on (a plugin by its source's digest)
        settings_facts["metric"] = {"spec": settings.metric.spec, "digest": settings.metric.digest}
    versions = tool_versions(all_backends=True) if use_cache else {}

    result = RunResult(final=None)
    known: dict[str, Artifact] = {}  # artifacts of this run, by digest, for the ledger's final timing pass
    try:
        for ps in steps:
            ui.info(f"[bold]{ps.step.name}[/]: {ps.step.summary}")
            options = ps.config.model_dump(mode="json")
            key = cache.step_key(step=ps.step.name, options=options, parent=chain.artifact, settings=settings_facts,
                                 seed=recipe.seed, versions=versions, base=base) if use_cache else None
            if ps.output is not None:
                with build_lock(ps.output.parent) if key else contextlib.nullcontext():
                    if key and _reuse(run, ps, key):
                        result.cached.append(ps.index)
                    elif cache_only:
                        raise NotCached(ps.step.name)
                    else:
                        source.prepare()
                        if source.source.record:
                            known.setdefault(source.source.record.sha256, source.source)
                        _seed(recipe.seed + ps.index)
                        _run_producing(run, ps, cache_key=key)
                result.final = chain.artifact
                result.written += _files_of(chain.artifact)
                known[chain.artifact.record.sha256] = chain.artifact
                continue
            stored = _profile_path(recipe, base, ps)
            profile, why = cache.lookup_profile(stored, key) if key else (None, None)
            if profile is not None:
                ui.info(f"[cyan]↺[/] {ps.step.name}: reused {stored.name} from the cache")
                result.cached.append(ps.index)
            elif cache_only:
                raise NotCached(ps.step.name)
            else:
                if why:
                    ui.warn(f"{ps.step.name}: cached {stored.name} not reused ({why}); measuring again")
                source.prepare()
                profile = _run_measuring(run, ps)
                if key:
                    from optkit.types.files import write_json

                    write_json(stored, cache.profile_entry(profile, key))
            if key:
                result.written.append(stored)
            result.profiles.append(profile)
        if result.final is not None and settings.enabled and ledger_timing:
            store = recipe.output_path(base) / LEDGER_TIMING_FILE if use_cache else None
            timing = timed_ledger(result.final, known, data, settings, ui, store=store,
                                  reuse=not retime and len(result.cached) == len(steps))
            result.ledger_latency, result.timing_reused_from = timing.latency, timing.reused_from
            if store is not None and store.is_file():
                result.written.append(store)
    except StepError as exc:
        result.final = chain.artifact if chain.artifact.record else result.final
        result.wall_time_s = time.perf_counter() - started
        return result, exc
    result.wall_time_s = time.perf_counter() - started
    return result, None


def _files_of(artifact: Artifact) -> list[Path]:
    """An artifact's files, its sidecar and its reference outputs: what a manifest lists for it."""
    files = [*artifact.files(), sidecar_path(artifact.path)]
    if artifact.reference and Path(artifact.reference["path"]).parent == artifact.path.parent:
        files.append(Path(artifact.reference["path"]))
    return files


def _profile_path(recipe: Recipe, base: Path, ps: PlannedStep) -> Path:
    return recipe.output_path(base) / f"{ps.index:02d}_{ps.step.name}.json"


def build_cpus(recipe: Recipe, base: Path) -> int:
    """CPUs a build of the recipe keeps busy: the most any of its steps does (its steps run one after another)."""
    return max((ps.step.num_cpus(ps.config) for ps in plan(recipe, base) if ps.output is not None), default=1)


def build_recipe(recipe: Recipe, base: str, use_cache: bool) -> tuple[RunResult, StepError | None]:
    """A recipe's steps without the ledger's timing pass, where an executor puts it (a Ray worker, say); the pass
    is ``ledger_pass``, run apart as a measurement."""
    return collect_run(recipe, Path(base), UI(quiet=True), use_cache=use_cache, ledger_timing=False)


def ledger_pass(recipe: Recipe, base: str, final: Artifact, reuse: bool = False) -> LedgerTiming | None:
    """The ledger's one interleaved timing pass over a finished run's rows, on its own: what ``collect_run`` does
    at its end, with the same data and settings (None when the recipe measures nothing); ``reuse``: every step came
    from the cache, so the last pass's figures may serve."""
    ui = UI(quiet=True)
    settings = settings_of(recipe)
    if not settings.enabled:
        return None
    source = open_source(recipe, Path(base))
    import_factory_first(source)
    data = data_for(source, ui)
    return timed_ledger(final, {}, data, checked_settings(settings, data, source, ui), ui,
                        store=recipe.output_path(Path(base)) / LEDGER_TIMING_FILE, reuse=reuse)
