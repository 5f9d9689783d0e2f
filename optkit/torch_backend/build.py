"""One subgraph built into an optkit artifact through the same recipe engine as ``optkit run``, cached on disk.

A cache entry is a folder named by the subgraph's key (graph code, weights, input dtypes/shapes with their
dynamic dims, the build options, library versions and optkit's source): the graph traced to TorchScript, the
real inputs it was called with (evaluation data and, for int8, calibration data), the recipe, the build folder
(every step's artifact, sidecar and report.json/md/html: ``optkit report ENTRY/build/NN_compile.onnx`` shows
the ledger), and ``entry.json`` written last. A folder without ``entry.json`` is an interrupted build and is
built again; a second process finds ``entry.json`` and opens the artifact without exporting anything.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from optkit.torch_backend.graph import GraphInputs
from optkit.torch_backend.options import BackendOptions

log = logging.getLogger("optkit.torch")
ENTRY = "entry.json"
_BUILD_ONLY = ("target", "precision", "recipe", "calib_data", "calib_calls", "metric", "max_drop")


def entry_key(digest: str, options: BackendOptions) -> str:
    import hashlib

    from optkit.engine.cache import optkit_source_digest
    from optkit.engine.versions import tool_versions
    from optkit.types.files import sha256_file

    asked = {k: getattr(options, k) for k in _BUILD_ONLY}
    for k in ("recipe", "calib_data"):  # a file's content, not its name
        if asked[k]:
            asked[k] = sha256_file(Path(asked[k]).expanduser())
    blob = json.dumps({"graph": digest, "options": asked, "versions": tool_versions(all_backends=True),
                       "optkit": optkit_source_digest(), "layout": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cached(entry: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((entry / ENTRY).read_text())
    except (OSError, ValueError):
        return None
    return record if (entry / record.get("artifact", "")).is_file() else None


def _steps(options: BackendOptions, export: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(steps, measure) of the build: the user's recipe with this export first, or the default chain."""
    measure: dict[str, Any] = {"threads": 1, "budget_s": 0.05}
    if options.recipe:
        import yaml

        raw = yaml.safe_load(Path(options.recipe).expanduser().read_text()) or {}
        steps = list(raw.get("steps") or [])
        names = [next(iter(s)) if isinstance(s, dict) else s for s in steps]
        steps = [s for s, n in zip(steps, names) if n not in ("export", "profile")]
        return [{"export": export}, *steps], {**measure, **(raw.get("measure") or {})}
    calib = {"calib_data": "calib.npz"}
    drop = {"max_drop": options.max_drop}  # the budget alone: no guard, no NNCF accuracy control
    if options.target == "openvino-cpu":
        tail = [{"compile": {"target": "openvino-cpu", "precision": options.precision,
                             **({**calib, **drop, "accuracy_control": False} if options.precision == "int8" else {})}}]
    elif options.precision == "int8":
        tail = [{"fuse": {"level": "basic"}}, {"quantize": {"mode": "auto", **calib, **drop, "guard": False}},
                {"compile": {"target": "ort-cpu"}}]
    else:
        tail = [{"fuse": {}}, {"compile": {"target": "ort-cpu"}}]
    return [{"export": export}, *tail], measure


def given_calibration(path: Path, inputs: GraphInputs, first: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``calib_data`` for this subgraph: its arrays (labels aside) in order are the subgraph's tensor inputs, which
    holds for a model dynamo captures as one graph; anything else is refused (the subgraph then runs eagerly)."""
    from optkit.types.errors import UsageError

    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[k] for k in data.files if k != "labels"]
    except (OSError, ValueError) as exc:
        raise UsageError(f"calib_data {path.name}: not a readable .npz ({exc})") from exc
    fits = len(arrays) == len(inputs.names) and all(
        a.ndim == first[n].ndim and a.dtype == first[n].dtype and all(
            a.shape[d] == first[n].shape[d] for d in range(1, a.ndim) if d not in inputs.dynamic.get(n, {}))
        for a, n in zip(arrays, inputs.names))
    if not fits:
        got = ", ".join(f"{a.dtype}{list(a.shape)}" for a in arrays)
        want = ", ".join(f"{first[n].dtype}{list(first[n].shape)}" for n in inputs.names)
        raise UsageError(f"calib_data {path.name} holds {got}; this subgraph takes {want}",
                         hint="Give arrays in the order of forward's tensor arguments, or leave calib_data out "
                              "to calibrate on the first calls")
    return dict(zip(inputs.names, arrays))


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, *(), **arrays)  # type: ignore[arg-type]  # numpy's stub reads **arrays as allow_pickle


def build(entry: Path, frozen, inputs: GraphInputs, samples: list[dict[str, np.ndarray]],
          options: BackendOptions) -> dict[str, Any]:
    """Trace, then run the recipe in ``entry``; returns the entry record. Raises OptkitError on failure."""
    import shutil

    import torch
    import yaml

    from optkit.engine.recipe import load_recipe
    from optkit.engine.outcome import run_and_judge
    from optkit.report.run import write_run_report
    from optkit.types.runfolder import run_output_dir
    from optkit.types.errors import StepError
    from optkit.types.ui import UI, quiet_libraries

    started = time.perf_counter()
    if entry.exists():  # an interrupted build: start again
        shutil.rmtree(entry)
    entry.mkdir(parents=True)
    first = samples[0]
    with torch.inference_mode(False), torch.no_grad(), quiet_libraries():
        traced = torch.jit.trace(frozen, tuple(torch.from_numpy(first[n]) for n in inputs.names), check_trace=False,
                                 strict=False)
    torch.jit.save(traced, str(entry / "subgraph.pt"))
    same_shape = all(s[n].shape[1:] == first[n].shape[1:] for s in samples for n in inputs.names)
    joined = {n: np.concatenate([s[n] for s in samples]) if same_shape else first[n] for n in inputs.names}
    _save_npz(entry / "eval.npz", {n: first[n] for n in inputs.names})
    calib = given_calibration(Path(options.calib_data).expanduser(), inputs, first) if options.calib_data else joined
    _save_npz(entry / "calib.npz", calib)
    dims = inputs.dynamic
    batch_dynamic = any(0 in d for d in dims.values())
    export: dict[str, Any] = {"dynamic_batch": batch_dynamic, "verify_batch_sizes": [first[inputs.names[0]].shape[0]],
                              "dynamic_axes": [f"{n}:{d}:{s}" for n, ds in dims.items() for d, s in ds.items() if d]}
    steps, measure = _steps(options, export)
    measure.setdefault("batch_sizes", [first[inputs.names[0]].shape[0]])
    raw = {"model": "subgraph.pt", "eval_data": "eval.npz", "output_dir": "build", "metric": options.metric,
           "measure": measure, "steps": steps}
    if not dims:
        raw["input_shapes"] = {n: list(first[n].shape) for n in inputs.names}
    (entry / "recipe.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    recipe, base = load_recipe(entry / "recipe.yaml")
    ui = UI(quiet=not log.isEnabledFor(logging.DEBUG))
    threads = torch.get_num_threads()  # measuring sets it; dynamo guards on it (a change would recompile)
    try:
        with run_output_dir(recipe.output_path(base)):
            done = run_and_judge(recipe, base, ui, use_cache=True)
            write_run_report(done, entry / "recipe.yaml")
    finally:
        torch.set_num_threads(threads)
    if done.error:
        raise done.error
    if done.result.final is None:
        raise StepError("the build produced no artifact")
    final = done.result.final.path.resolve()
    record = {"artifact": str(final.relative_to(entry.resolve())), "inputs": inputs.names,
              "format": done.result.final.format, "build_s": round(time.perf_counter() - started, 2),
              "steps": [r.step for r in done.rows], "options": options.model_dump(mode="json")}
    tmp = entry / f".{ENTRY}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(entry / ENTRY)
    return record

