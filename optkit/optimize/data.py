"""``optimize`` on a model that comes with no evaluation data: seeded random inputs for its own input names and
shapes, written where the user can read them (``DIR/work/synthetic_eval.npz``), and said so. Without labels the
candidates are judged by their outputs' cosine to the original's (``--min-cosine``, 0.99 by default), as export
checks itself on the same kind of inputs (``eval.data.synthetic``). Nothing calibrates on them: random inputs would
give int8 the wrong ranges, so static int8 waits for real inputs (``--calib-data``), and the message names the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optkit.optimize.model import CandidateSettings
from optkit.types.ui import UI

SYNTHETIC = "synthetic_eval.npz"


def synthetic_eval_data(model: str, out_dir: Path, settings: CandidateSettings, ui: UI) -> str | None:
    """The path of seeded random evaluation inputs for MODEL when it has no evaluation data (no split beside it, no
    --eval-data, --text-data or --image-data); None when it has some."""
    import numpy as np

    from optkit.engine.recipe import Recipe
    from optkit.engine.setup import open_source
    from optkit.eval.data import synthetic

    if settings.eval_data or settings.text_data or settings.image_data:
        return None
    recipe = Recipe.model_validate(settings.recipe(model, ["profile"]))
    artifact = open_source(recipe, Path.cwd())  # a model without input shapes stops here, naming its inputs
    if artifact.eval_data:
        return None
    data = synthetic(artifact.inputs)
    path = out_dir / "work" / SYNTHETIC
    path.parent.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, Any] = dict(data.inputs)
    np.savez(path, **inputs)  # the same bytes on every run: the candidates' cache keys hold
    arrays = ", ".join(f"{name} [{'x'.join(map(str, value.shape))} {value.dtype}]" for name, value in data.inputs.items())
    names = ", ".join(data.inputs)
    calib = "" if artifact.calib_data else (
        f" Static int8 needs real inputs: write some to an .npz with arrays {names} and pass --calib-data FILE.npz.")
    real = f"--eval-data FILE.npz with arrays {names} and labels"
    if artifact.source.is_hf:
        real = "--image-data DIR" if artifact.source.is_image_model else "--text-data FILE.txt"
        calib = ""  # the same option gives the calibration split
    ui.warn(f"no evaluation data: the candidates are judged by their outputs' cosine to the original's on {len(data)} "
            f"seeded random inputs ({arrays}), written to {path}; accuracy is not measured. For a task metric pass "
            f"{real}.{calib}")
    return str(path)
