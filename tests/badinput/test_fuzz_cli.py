"""Hypothesis fuzz of the command line: every command, random subsets of its real options (read from the Typer
app), values mixing valid and invalid ones. Whatever comes in, optkit exits 0, 1, 2 or 3 and never shows a
traceback (in-process: CliRunner's ``exception`` is None or SystemExit).

Examples never raise inside Hypothesis (no shrinking of slow cases); failures are collected and reported
together at the end. Each example runs under a time limit, the whole fuzz under a time budget."""
from __future__ import annotations

import pytest

import tempfile
import time
from pathlib import Path

import typer.main
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from optkit.cli.app import app
from tests.badinput.helpers import CaseTimeout, cli, last_line

EXAMPLES = 100
EXAMPLE_LIMIT_S = 20     # one example running longer than this is reported
FUZZ_BUDGET_S = 110      # past this, the remaining examples are skipped and the fuzz fails as too slow
BUDGET = ["--budget-s", "0.01"]

NUMBERS = ["0", "-1", "1", "2", "8", "0.5", "1.5", "-0.1", "inf", "-inf", "nan", "1e9", "99999", "1000000", "1e-300"]
WORDS = ["", "abc", "1,,x", "☃", "--", "input:1x1x8x8", "input:0x1x8x8", "garbage", "1,8", "-3"]
# options whose huge values would make a *valid* run legitimately long (or spawn a thread per unit): small numbers only
SMALL_ONLY = {"threads", "train_threads", "epochs", "finetune_epochs", "guard_max_trials", "patience", "samples",
              "time_budget"}
HUGE = {"1e9", "99999", "1000000"}
KNOWN = {  # some valid values, so that a share of the examples gets past option validation
    "mode": ["static", "dynamic", "fp16", "auto"], "method": ["minmax", "entropy", "percentile"],
    "engine": ["ort", "onnxslim", "onnxsim", "inc"], "level": ["basic", "extended", "all"],
    "exporter": ["auto", "dynamo", "torchscript"], "target": ["ort-cpu", "openvino-cpu", "tensorrt", "ort-cuda"],
    "precision": ["fp32", "fp16", "bf16", "int8"], "importance": ["l1", "l2", "taylor"],
    "transformer": ["auto", "on", "off"], "skip_layer_norm": ["auto", "fused", "split"],
    "student_init": ["teacher", "random"], "input_shape": ["input:1x1x8x8", "input:2x1x8x8"],
    "batch_sizes": ["1", "1,8", "2"], "set_": ["measure.budget_s=0.01", "steps.export.opset=18", "x"],
    "shapes": ["input:1x1x8x8,1x1x8x8,8x1x8x8"],
}


def _leaf_commands() -> dict[str, object]:
    root = typer.main.get_command(app)
    found: dict[str, object] = {}

    def walk(group, prefix: list[str]) -> None:
        for name in group.list_commands(None):
            cmd = group.get_command(None, name)
            if getattr(cmd, "commands", None):
                walk(cmd, [*prefix, name])
            else:
                found[" ".join([*prefix, name])] = cmd

    walk(root, [])
    return found


# serve runs until stopped and loadtest for its --duration by design: their bad usage is tested in tests/serve
LONG_RUNNING = {"serve", "loadtest"}
COMMANDS = {name: cmd for name, cmd in _leaf_commands().items() if name not in LONG_RUNNING}


def _options(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "option"]


def _arguments(cmd) -> list:
    return [p for p in cmd.params if p.param_type_name == "argument"]


def _has_output(cmd) -> bool:
    return any("-o" in p.opts for p in _options(cmd))


def test_commands_are_discovered():
    expected = {"export", "simplify", "fuse", "quantize", "prune", "distill", "compile", "profile", "compare", "debug",
                "report", "run", "recipe schema"}
    assert expected <= set(COMMANDS), sorted(COMMANDS)


@pytest.mark.slow
def test_fuzz_cli(tiny, tiny_onnx, bad_models, bad_data, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01 junk bytes \xff" * 9)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    recipe = tmp_path / "tiny_recipe.yaml"
    recipe.write_text(f"model: {tiny['folder']}\noutput_dir: {tmp_path / 'recipe_out'}\n"
                      "measure: {batch_sizes: [1], budget_s: 0.01}\nsteps:\n  - export\n")
    missing = str(tmp_path / "missing" / "nope.onnx")
    paths = [missing, str(junk), str(empty), str(tiny_onnx), str(tiny["folder"]), str(tiny["eval"]),
             str(bad_data["nan_input"]), str(bad_data["shape_9x9"])]
    # model arguments: mostly bad files, so that few examples do real (slow) work
    bad_model_values = [missing, str(junk), str(empty), str(bad_models["truncated_onnx"]), str(bad_models["junk_pt2"]),
                        str(bad_models["empty_folder"]), str(bad_models["text"]), "", "not a model", "x.py:build"]
    model_values = st.sampled_from(bad_model_values + [str(tiny_onnx), str(tiny["folder"])] * 2)
    recipe_values = st.sampled_from([missing, str(junk), str(empty), str(bad_models["text"]), str(tiny_onnx),
                                     str(tmp_path), missing, str(junk), str(recipe)])

    def value_for(param) -> st.SearchStrategy[str]:
        numbers = [n for n in NUMBERS if not (param.name in SMALL_ONLY and n in HUGE)]
        pool = numbers + WORDS + paths
        known = KNOWN.get(param.name)
        return st.sampled_from(known * 3 + pool) if known else st.sampled_from(pool)

    @st.composite
    def invocation(draw):
        name = draw(st.sampled_from(sorted(COMMANDS)))
        cmd = COMMANDS[name]
        args: list[str] = name.split()
        for arg in _arguments(cmd):
            count = 1 if arg.nargs == 1 else draw(st.integers(1, 3))
            values = recipe_values if name == "run" else model_values
            args += [draw(values) for _ in range(count)]
        optional = [p for p in _options(cmd) if not p.required]
        chosen = draw(st.lists(st.sampled_from(optional), unique_by=lambda p: p.name,
                               max_size=min(4, len(optional)))) if optional else []
        for p in [q for q in _options(cmd) if q.required and "-o" not in q.opts]:  # e.g. distill --teacher
            args += [p.opts[-1], draw(model_values)]
        for p in chosen:
            if p.is_flag:
                args.append(draw(st.sampled_from([*p.opts, *p.secondary_opts])))
                continue
            for _ in range(draw(st.integers(1, 2)) if p.multiple else 1):
                args += [draw(st.sampled_from(p.opts)), draw(value_for(p))]
        return name, args, {p.name for p in chosen}

    failures: list[str] = []
    stats = {"run": 0, "skipped": 0, "codes": {}}
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(invocation())
    def one(example):
        name, args, chosen = example
        if time.monotonic() - started > FUZZ_BUDGET_S:
            stats["skipped"] += 1
            return
        folder = Path(tempfile.mkdtemp(dir=tmp_path, prefix="ex-"))
        if _has_output(COMMANDS[name]):
            args = [*args, "-o", str(folder / "out.onnx")]
        if "budget_s" not in chosen and any(p.name == "budget_s" for p in _options(COMMANDS[name])):
            args = [*args, *BUDGET]
        if "time_budget" not in chosen and any(p.name == "time_budget" for p in _options(COMMANDS[name])):
            args = [*args, "--time-budget", "8s"]  # a valid optimize is bounded by it, well inside the example's limit
        stats["run"] += 1
        shown = " ".join(repr(a) if (not a or " " in a) else a for a in args)
        t0 = time.monotonic()
        try:
            result = cli(*args, timeout=EXAMPLE_LIMIT_S)
        except CaseTimeout:
            failures.append(f"timed out after {EXAMPLE_LIMIT_S}s: optkit {shown}")
            return
        exc = result.exception
        if exc is not None and not isinstance(exc, SystemExit):
            failures.append(f"uncaught {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                            f" <- optkit {shown}")
            return
        stats["codes"][result.exit_code] = stats["codes"].get(result.exit_code, 0) + 1
        if result.exit_code not in (0, 1, 2, 3):
            failures.append(f"exit {result.exit_code} ({last_line(result.stderr)[:160]}) <- optkit {shown}")
        elif "Traceback" in result.output:
            failures.append(f"Traceback in the output (exit {result.exit_code}) <- optkit {shown}")
        elif time.monotonic() - t0 > EXAMPLE_LIMIT_S:
            failures.append(f"took {time.monotonic() - t0:.0f}s <- optkit {shown}")

    one()
    elapsed = time.monotonic() - started
    summary = (f"{stats['run']} examples run in {elapsed:.0f}s, exit codes {dict(sorted(stats['codes'].items()))}, "
               f"{stats['skipped']} skipped past the {FUZZ_BUDGET_S}s budget")
    print(summary)
    if stats["skipped"]:
        failures.append(f"too slow: {summary}")
    assert not failures, f"{len(failures)} failing examples ({summary}):\n" + "\n".join(failures[:25])
