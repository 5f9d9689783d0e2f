"""Before any step runs: the source model opened, every output path checked, the data read, the
measurement settings and the task metric fixed, the model probed at the data's shape."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from optkit.engine.recipe import PlannedStep, Recipe
from optkit.eval.data import EvalData, load_npz, specs_from_data, synthetic
from optkit.eval.measure import MeasureSettings
from optkit.eval.task_metric import Metric
from optkit.types.artifact import Artifact, TensorSpec, sidecar_path
from optkit.backends.opening import open_artifact
from optkit.backends.ownership import optkit_wrote
from optkit.types.errors import OptkitError, StepError, UsageError, first_line
from optkit.types.paths import resolve_ref as resolve
from optkit.types.files import sha256_file
from optkit.types.ui import UI


def settings_of(recipe: Recipe) -> MeasureSettings:
    m = recipe.measure
    return MeasureSettings(batch_sizes=tuple(m.batch_sizes), threads=m.threads, budget_s=m.budget_s, enabled=m.enabled)


def _resolved(base: Path, value: str) -> str:
    """``resolve_ref`` of a path that is set (it gives None only for None)."""
    return resolve(base, value) or value


def open_source(recipe: Recipe, base: Path) -> Artifact:
    weights = resolve(base, recipe.weights)
    artifact = open_artifact(_resolved(base, recipe.model), weights=Path(weights) if weights else None,
                             task=recipe.task, trust_remote_code=recipe.trust_remote_code)
    if recipe.text_data and recipe.image_data:
        raise UsageError("--text-data and --image-data were both given", hint="Give the one the model reads")
    if recipe.text_data or recipe.image_data:
        artifact = with_hf_data(artifact, recipe, base)
    if recipe.eval_data:
        artifact = artifact.with_split("eval", Path(_resolved(base, recipe.eval_data)).resolve())
    if recipe.input_shapes:
        known = {i.name: i for i in artifact.inputs}
        if artifact.format != "torch" and set(recipe.input_shapes) - set(known):
            raise UsageError(f"--input-shape names {', '.join(sorted(set(recipe.input_shapes) - set(known)))}, "
                             f"but the model's inputs are {', '.join(known)}", hint="Use the model's input names")
        # a name the model does not declare (a torch model) takes its dtype from the evaluation data, else float32
        from_data = {s.name: s for s in specs_from_data(artifact.eval_data)} if artifact.eval_data else {}
        known = {**from_data, **known}
        artifact = artifact.with_(inputs=[TensorSpec(name, tuple(shape), known[name].dtype if name in known else "float32")
                                          for name, shape in recipe.input_shapes.items()])
    if not artifact.inputs and artifact.eval_data:
        artifact = artifact.with_(inputs=specs_from_data(artifact.eval_data))
    if not artifact.inputs:
        raise UsageError(f"cannot tell the input shape of {artifact.path.name}", hint=shape_hint(artifact))
    return artifact


def input_names(artifact: Artifact) -> list[str]:
    """The model's input names: its spec's, else a PyTorch model's ``forward`` parameters (empty when unknown)."""
    if artifact.inputs:
        return [spec.name for spec in artifact.inputs]
    if artifact.format != "torch":
        return []
    import inspect

    from optkit.backends.torch import load_module

    try:
        forward = load_module(artifact).forward
        params = inspect.signature(forward).parameters.values()
    except Exception:  # noqa: BLE001 - only a hint: the error it goes with is the one to report
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name != "self" and p.default is p.empty]


def shape_hint(artifact: Artifact) -> str:
    """How to give the input shapes of a model that declares none, in its own input names."""
    names = input_names(artifact)
    shapes = " ".join(f"--input-shape {name}:DIMS" for name in names or ["NAME"])
    arrays = (f"arrays named {', '.join(names)}" if len(names) > 1 else f"an array named {names[0]}" if names
              else "an array per input")
    return (f"Pass {shapes} (DIMS: one batch's sizes joined by 'x', batch first; recipes: input_shapes), "
            f"or --eval-data FILE.npz with {arrays} (+ labels)")


def with_hf_data(artifact: Artifact, recipe: Recipe, base: Path) -> Artifact:
    """A Hugging Face model with its ``text_data`` tokenized (or its ``image_data`` preprocessed) into eval and
    calib splits (``optkit-data/`` beside the run's first output); the source records the data, the tokenizer or
    processor files and their digests."""
    from optkit.backends.hf_folder import TEXT_TASKS, read_config, tokenizer_files

    src = artifact.source
    option, wanted = ("--image-data", "image classifier") if recipe.image_data else ("--text-data", "text model")
    fits = src.is_image_model if recipe.image_data else src.task in TEXT_TASKS
    if not src.is_hf or not fits:
        raise UsageError(f"{option} needs a Hugging Face {wanted}; {artifact.path.name} is "
                         + (f"a {src.task} model" if src.is_hf else "not one (a model "
                            "exported from one keeps the data it was exported with)"),
                         hint="Pass the model's folder (config.json, weights, "
                              + ("image processor" if recipe.image_data else "tokenizer") + ") or hf:ORG/NAME, "
                              "or --eval-data")
    folder = src.hf_folder
    first = next((s.output for s in recipe.steps if s.output), None)
    out_folder = Path(_resolved(base, first)).parent if first else recipe.output_path(base)
    config = read_config(folder)
    if recipe.image_data:
        from optkit.eval.image_data import prepare as prepare_images

        made = prepare_images(Path(_resolved(base, recipe.image_data)), folder, out_folder,
                              channels=int(config.get("num_channels", 3)), label2id=config.get("label2id"))
        key = "image_data"
    else:
        from optkit.eval.text_data import prepare

        made = prepare(Path(_resolved(base, str(recipe.text_data))), folder, out_folder,
                       input_names=[t.name for t in artifact.inputs], label2id=config.get("label2id"),
                       max_length=recipe.max_length, seq_len=recipe.seq_len, tokenizer_files=tokenizer_files(folder))
        key = "text_data"
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in made.items()}
    return (artifact.with_split("eval", made["eval"]).with_split("calib", made["calib"])
            .with_(source=src.model_copy(update={key: record})))


def check_outputs(recipe: Recipe, steps: list[PlannedStep], source: Artifact, ui: UI) -> None:
    """Every output path is checked before any work: never the input model's files, the data, the
    recipe, a device, a directory, or a file optkit did not write. Stale temp files a killed run left
    in an output folder are removed."""
    from optkit.backends.ownership import check_output_path
    from optkit.types.files import remove_stale_temp

    protected = [*source.files(), source.path, sidecar_path(source.path), *source.data.values()]
    if source.reference:
        protected.append(Path(source.reference["path"]))
    if recipe._origin:
        protected.append(Path(recipe._origin))
    protected_dirs = [source.path] if source.path.is_dir() else []
    for ps in steps:
        if ps.output is None:
            continue
        fmt, _ = ps.step.output_format(ps.config)
        check_output_path(ps.output, protected=protected, protected_dirs=protected_dirs,
                          folder_output=fmt == "torch", what=f"{ps.step.name} output")
        if fmt == "openvino":  # the IR's weights file beside it is written too
            check_output_path(ps.output.with_suffix(".bin"), protected=protected, protected_dirs=protected_dirs,
                              what=f"{ps.step.name} weights", owned=_weights_of(ps.output))
        for stale in remove_stale_temp(ps.output.parent):
            ui.warn(f"removed {stale.name}, left in {stale.parent} by an optkit process that was killed")


def _weights_of(xml: Path) -> Callable[[Path], bool]:
    """An IR's .bin is optkit's when the .xml beside it is (the sidecar records both)."""
    return lambda _bin: optkit_wrote(xml)


def checked_settings(settings: MeasureSettings, data: EvalData, artifact: Artifact, ui: UI) -> MeasureSettings:
    """Threads beyond the CPU count are clamped (with a warning); batches that cannot fit in memory are refused."""
    import dataclasses

    from optkit.eval.data import check_fits_memory, sample_bytes
    from optkit.eval.measure import usable_threads

    settings = dataclasses.replace(settings, threads=usable_threads(settings.threads, ui.warn))
    if settings.enabled:
        per_sample = sum(v[:1].nbytes for v in data.inputs.values()) or sample_bytes(artifact.inputs)
        biggest = max(*settings.batch_sizes, settings.eval_batch_size)
        check_fits_memory(per_sample * biggest, f"a batch of {biggest} samples")
    return settings


def import_factory_first(artifact: Artifact) -> None:
    if artifact.source.is_factory:
        from optkit.backends.torch_factory import import_factory

        import_factory(artifact.source.factory_ref)  # an import error is the first thing to report


def with_metric(settings: MeasureSettings, metric: Metric | None, artifact: Artifact, data: EvalData) -> MeasureSettings:
    """The run's task metric: the one asked for (checked: it needs labels the data may lack), else the default."""
    import dataclasses

    from optkit.eval.task_metric import metric_for

    return dataclasses.replace(settings, metric=metric_for(metric, artifact.task, data))


def data_for(artifact: Artifact, ui: UI) -> EvalData:
    path = artifact.eval_data
    if path is None:
        fix = "--eval-data FILE.npz"
        if artifact.source.is_hf:
            fix = ("--image-data DIR (images the model's processor turns into data)"
                   if artifact.source.is_image_model
                   else "--text-data FILE.txt (texts the model's tokenizer turns into data)") + " or " + fix
        ui.warn(f"no evaluation data: numeric checks use seeded random inputs and accuracy is not measured "
                f"(pass {fix})")
        return synthetic(artifact.inputs)
    return load_npz(path, artifact.inputs)


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """A library failing inside a step or a measurement is a failed step (exit 1), not a crash."""
    try:
        yield
    except OptkitError:
        raise
    except Exception as exc:
        if os.environ.get("OPTKIT_DEBUG"):
            raise
        raise StepError(f"{what} failed: {first_line(exc, 300)}",
                        hint="Re-run with OPTKIT_DEBUG=1 for the traceback") from exc


def probe(artifact: Artifact, data: EvalData) -> None:
    """Run one batch before anything else, so a shape the model cannot take is reported as such."""
    from optkit.backends import open_runner
    from optkit.eval.measure import static_batch

    feed = data.batch(static_batch(artifact) or 1)
    with open_runner(artifact, threads=1) as runner:
        try:
            runner.infer(feed)
        except Exception as exc:
            shapes = ", ".join(f"{k}:{'x'.join(map(str, v.shape))}" for k, v in feed.items())
            text = str(exc).strip().splitlines()
            raise UsageError(f"input shape {shapes} does not fit {artifact.path.name} "
                             f"({type(exc).__name__}: {text[-1][:200] if text else ''})",
                             hint="Pass the right --input-shape NAME:DIMS, or evaluation data of the right shape") from exc


def load_reference(artifact: Artifact, data: EvalData) -> dict[str, np.ndarray] | None:
    ref = artifact.reference
    if not ref or data.sha256 != ref.get("eval_sha256") or not Path(ref["path"]).is_file():
        return None
    if sha256_file(Path(ref["path"])) != ref.get("sha256"):
        return None
    with np.load(ref["path"], allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
