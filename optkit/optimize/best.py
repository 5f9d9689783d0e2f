"""The winner's recipe (``best.yaml``) and its run into ``DIR/best/``.

best.yaml keeps the candidates' recipe keys and measure settings, so its step cache keys are theirs: optimize runs
it into ``DIR/best/`` with its steps seeded by copies of the winner's (``copy_artifact``: files and a sidecar of
their own) and builds only a step best.yaml pins differently (compile ort-cpu's session), to the same bytes, so
``optkit run DIR/best.yaml`` finds every step in the cache.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from optkit.engine.recipe import PlannedStep
from optkit.optimize.model import CandidateSettings, Outcome, Search
from optkit.types.artifact import Artifact
from optkit.types.errors import OptkitError, UsageError, first_line
from optkit.types.files import Staging
from optkit.types.records import StepRecord
from optkit.types.ui import UI

BEST_DIR = "best"  # best.yaml's output_dir, beside it


def best_recipe(search: Search, winner: Outcome, model: str, settings: CandidateSettings) -> dict[str, Any]:
    """The recipe that rebuilds the winner from MODEL (into ``best/`` beside it), with the recipe keys, options and
    measure settings its candidate was built with: the same step cache keys, so its steps are reused."""
    steps = [*({p["name"]: p["options"]} for p in search.prefix), *winner.recipe_steps()]
    return {k: v for k, v in {"model": model, **settings.to_json(), "output_dir": BEST_DIR, "steps": steps}.items()
            if v is not None}


def rebuild_winner(recipe_keys: dict[str, Any], winner: Outcome, out_dir: Path, ui: UI) -> Artifact | None:
    """best.yaml's run, here: its steps seeded with copies of the winner's chain, then run with the step cache
    (quietly, without the ledger's timing pass). None, with a warning, when it cannot be done: ``optkit run
    best.yaml`` then builds what is missing itself."""
    from optkit.engine.recipe import Recipe, plan
    from optkit.engine.run import collect_run
    from optkit.types.runfolder import run_output_dir

    folder = out_dir / BEST_DIR
    built = winner.built
    error: Exception | None
    try:
        recipe = Recipe.model_validate({**recipe_keys, "output_dir": str(folder)})
        with run_output_dir(folder):
            planned = plan(recipe, out_dir)
            _seed(built, [ps for ps in planned if ps.output is not None])
            result, error = collect_run(recipe, out_dir, UI(quiet=True), use_cache=True, ledger_timing=False,
                                        planned=planned)
    except (OptkitError, OSError) as exc:
        error = exc
    if error is not None:
        why = error.one_line() if isinstance(error, OptkitError) else first_line(error)
        ui.warn(f"could not build the winner's recipe into {folder} ({why}); `optkit run best.yaml` will")
        return None
    final = result.final
    if final is None or final.record is None or winner.record is None or final.record.sha256 != winner.record.sha256:
        # a pinned choice that does not rebuild the same bytes
        where = final.path if final is not None else folder
        ui.warn(f"best.yaml built {where} with other bytes than the winner's {built.path};"
                f" best.{built.path.suffix.lstrip('.')} is the winner as timed")
        return None
    return final


def _seed(final: Artifact, produced: list[PlannedStep]) -> None:
    """Copy the winner's chain to the outputs best.yaml's producing steps get (its last rows are those steps), up to
    the first step whose name or options differ from what was built: that one and the rest are built by the run."""
    from optkit.engine.cache import lookup_artifact
    from optkit.backends.opening import open_artifact

    chain = final.chain()
    if len(chain) <= len(produced):
        return
    moved: dict[str, str] = {}
    for rec, ps in zip(chain[-len(produced):], produced):
        output = ps.output
        if output is None or rec.step != ps.step.name or rec.params != ps.config.model_dump(mode="json") \
                or not rec.cache_key:
            return
        hit, _ = lookup_artifact(output, rec.cache_key)
        if hit is None or hit.record is None or hit.record.sha256 != rec.sha256:
            built = open_artifact(rec.artifact)
            if built.record is None or built.digest() != rec.sha256:
                return
            with Staging() as stage:
                copy_artifact(built, output, stage, moved)
                stage.commit()
        moved[rec.artifact] = str(output)


def copy_artifact(artifact: Artifact, dst: Path, stage: Staging, moved: dict[str, str] | None = None) -> Artifact:
    """``artifact``'s files staged at ``dst`` (an OpenVINO IR's .bin beside it) with a sidecar of their own: the same
    record and lineage (so the same digest: the bytes are the same), its path the copy's. ``moved``: ancestors
    already copied (old path -> new), whose rows then name their copies; the reference outputs follow the copy
    when they sit beside ``artifact`` (as a run's first step writes them)."""
    from optkit.engine.produce import REFERENCE_SUFFIX
    from optkit.types.artifact import sidecar_path
    from optkit.types.sidecar import write_sidecar_text

    if artifact.record is None or artifact.path.is_dir():
        raise UsageError(f"{artifact.path} is not a file optkit wrote: it cannot be copied with its ledger")
    moved = {} if moved is None else moved
    first = None
    for src in artifact.files():
        target = dst if src == artifact.path else dst.with_suffix(src.suffix)
        tmp = stage.path_for(target, like=first)
        first = first or tmp
        shutil.copyfile(src, tmp)
    reference = artifact.reference
    if reference:
        ref = Path(reference["path"])
        if str(ref) not in moved and ref == artifact.path.with_name(artifact.path.name + REFERENCE_SUFFIX):
            new_ref = dst.with_name(dst.name + REFERENCE_SUFFIX)
            shutil.copyfile(ref, stage.path_for(new_ref))
            moved[str(ref)] = str(new_ref)
        reference = {**reference, "path": moved.get(str(ref), str(ref))}

    def repath(rec: StepRecord, own: str | None = None) -> StepRecord:
        update: dict[str, Any] = {"artifact": own or moved.get(rec.artifact, rec.artifact)}
        if rec.parent is not None and rec.parent.artifact in moved:
            update["parent"] = rec.parent.model_copy(update={"artifact": moved[rec.parent.artifact]})
        return rec.model_copy(update=update)

    copy = artifact.with_(path=dst, record=repath(artifact.record, str(dst)), reference=reference,
                          lineage=[repath(rec) for rec in artifact.lineage])
    stage.write_text(sidecar_path(dst), write_sidecar_text(copy, dst))
    return copy
