"""optkit optimize MODEL -o DIR: the fastest artifact within a task budget, found by measurement.

The export options a PyTorch MODEL needs (``--input-shape``, and ``--exporter``, ``--opset``, ``--dynamic-axis``
generated from the export step's Config) go to the one export every candidate starts from, and into best.yaml.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, cast

import typer

from optkit.cli import options as o
from optkit.cli.from_config import config_options

EXPORT_OPTIONS = ("exporter", "opset", "dynamic_axes")


@config_options("export", fields=EXPORT_OPTIONS)
def optimize(
    model: Annotated[str, typer.Argument(help="What export takes (sample-model folder, Hugging Face folder or hf:ORG/NAME, factory, TorchScript, .pt2) or an ONNX file.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output folder: best.yaml, the winner, reports, candidates/.")],
    targets: Annotated[list[str], typer.Option("--targets", metavar="TARGET", help="Runtimes to search: ort-cpu, openvino-cpu (repeat or separate with commas).")] = ["ort-cpu", "openvino-cpu"],
    metric: o.Metric = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", min=0, help="Largest drop of the task metric (points for fractions) the winner may have vs MODEL, the original model. Default: 1.")] = None,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", min=-1, max=1, help="Smallest mean output cosine vs the original (default 0.99 when no task metric judges).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Batch size the candidates are timed and ranked at.")] = 1,
    time_budget: Annotated[str, typer.Option("--time-budget", help="Bound on the whole search (e.g. 90s, 10m): builds still running are stopped in time for the final timing pass to end on it.")] = "10m",
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help=".npz the int8 candidates calibrate on (default: the model's calib split).")] = None,
    eval_data: o.EvalData = None,
    weights: o.Weights = None,
    input_shape: o.InputShape = None,
    task: o.Task = None, text_data: o.TextData = None, image_data: o.ImageData = None,
    max_length: o.MaxLength = 128, seq_len: o.SeqLen = None,
    trust_remote_code: o.TrustRemoteCode = False,
    threads: o.Threads = 1,
    budget_s: o.Budget = 1.0,
    retime: Annotated[bool, typer.Option("--retime", help="Time the candidates again even when a rerun found them all in the cache (default: reuse that pass's figures, said in the report).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Write into an existing folder that holds files optkit did not write.")] = False,
    executor: o.Executor = "local",
    ray_address: o.RayAddress = None,
    json_out: o.Json = False,
    config_extra: Optional[dict] = None,
) -> None:
    """Build ONNX Runtime and OpenVINO candidates (fp32, int8 static/dynamic, NNCF), keep the fastest within budget."""
    from optkit.cli.common import parse_shapes, print_json
    from optkit.engine.executors import make_executor
    from optkit.optimize.model import OptimizeRun
    from optkit.optimize.search import optimize as search_for
    from optkit.optimize.search import parse_duration
    from optkit.optimize.space import Budget
    from optkit.report.optimize import headline, optimize_markdown, write_optimize_outputs
    from optkit.types.errors import GateError, UsageError
    from optkit.types.paths import expand_path, real_path, resolve_ref
    from optkit.types.runfolder import run_output_dir
    from optkit.types.ui import UI

    if not output.strip():
        raise UsageError("-o/--output is empty", hint="Give an output folder, e.g. -o optimized/")
    seconds = parse_duration(time_budget)
    wanted = tuple(o.split_values(targets, "--targets"))
    out_dir = real_path(expand_path(output, "-o/--output"), "-o/--output")
    ui = UI()
    def absolute(ref) -> str | None:  # paths written into best.yaml must not depend on where it is run from
        return resolve_ref(Path.cwd(), str(ref)) if ref else None

    model = absolute(model) or model  # '' stays '' (the search names it as a bad MODEL)
    # hf_keys writes the paths as text: the absolute ones, as they are (a Path would drop a folder's trailing '/')
    hf = o.hf_keys(task, cast(Optional[Path], absolute(text_data)), cast(Optional[Path], absolute(image_data)),
                   max_length, seq_len, trust_remote_code)
    with run_output_dir(out_dir, force=force, what="-o/--output"):
        runner = make_executor(executor, ray_address, ui)
        try:
            search = search_for(OptimizeRun(
                model, out_dir, ui, targets=wanted, metric=metric,
                budget=Budget(max_drop=max_drop, min_cosine=min_cosine), batch_size=batch_size, time_budget_s=seconds,
                threads=threads, timing_budget_s=budget_s, retime=retime, calib_data=absolute(calib_data),
                eval_data=absolute(eval_data), weights=absolute(weights), hf=hf, executor=runner,
                input_shapes=parse_shapes(input_shape), export=config_extra or {}))
        finally:
            runner.close()
        report = write_optimize_outputs(out_dir, search, model)
    if json_out:
        print_json(report.to_json())
    else:
        print(optimize_markdown(report), end="")
    if search.winner is None:
        raise GateError("no candidate is within the budget (see report.md for why each was rejected)",
                        hint=f"Loosen --max-drop/--min-cosine, or add --calib-data; reports are in {out_dir}")
    ui.info(f"winner: {headline(report)} Rebuild with: optkit run {out_dir / 'best.yaml'} "
            f"({'every step is in the cache; ' if search.best else ''}{search.wall_time_s:.0f}s)")
