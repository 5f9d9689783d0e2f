"""optkit debug FLOAT.onnx INT8.onnx: which layers does quantization hurt?"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from optkit.cli import options as o


def _earlier_ranking(path: Path) -> bool:
    import json

    try:
        return json.loads(path.read_text()).get("optkit_debug") == 1
    except (OSError, ValueError, AttributeError):
        return False


def debug(
    float_model: Annotated[str, typer.Argument(help="The float ONNX model.")],
    int8_model: Annotated[str, typer.Argument(help="The int8 ONNX model quantized from it (QDQ or dynamic).")],
    data: Annotated[Optional[Path], typer.Option("--data", help=".npz samples (default: the model's calibration split).")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, help="Samples run through both models.")] = 64,
    top: Annotated[int, typer.Option("--top", min=1, help="Rows shown.")] = 10,
    suggest: Annotated[int, typer.Option("--suggest", min=1, help="Worst groups put in the exclude: snippet.")] = 1,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Write the full ranking as JSON here.")] = None,
    json_out: o.Json = False,
) -> None:
    """Rank layers by quantization error (SQNR, cosine; activations and weights) and print an exclude: snippet."""
    from optkit.cli.common import print_json
    from optkit.types.files import Staging, dumps_json
    from optkit.backends.ownership import check_output_path
    from optkit.types.ui import UI
    from optkit.eval.qdebug import debug_models, render_debug

    target = None
    if output is not None:  # checked before the models run; only an earlier ranking is replaced
        target = check_output_path(output, protected=[Path(float_model), Path(int8_model)], what="-o ranking",
                                   owned=_earlier_ranking)
    ranking = debug_models(float_model, int8_model, data, samples=samples)
    if target is not None:
        with Staging() as stage:
            stage.write_text(target, dumps_json(ranking.to_json(suggest)))
            stage.commit()
    if json_out:
        print_json(ranking.to_json(suggest))
        return
    ui = UI()
    render_debug(ui.out, ranking, top)
    ui.out.print(f"\n# keep the {suggest} worst group(s) in float: paste into the recipe's quantize options",
                 highlight=False)
    ui.out.print(ranking.exclude_snippet(suggest), highlight=False, markup=False)
