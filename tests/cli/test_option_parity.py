"""One source of truth for options: every field of every step's Config is reachable from its command,
generated from the field (name, type, default, help), never declared by hand."""
from __future__ import annotations

import inspect

import pytest
from optkit.cli.app import all_commands, command_function
from optkit.cli.from_config import FLAGS
from optkit.steps.base import STEPS, step_class
from tests.conftest import FAST, invoke, sidecar

COMMANDS = all_commands()
# what a step command may declare by hand: its model (a Hugging Face model's task and text data included),
# output, evaluation and measurement options: recipe-level keys, not a step's
COMMAND_LEVEL = {"model", "artifact", "output", "weights", "input_shape", "eval_data", "metric", "measure",
                 "batch_sizes", "threads", "budget_s", "json_out", "markdown", "config_extra",
                 "task", "text_data", "image_data", "max_length", "seq_len", "trust_remote_code"}
# Config fields a command-level option stands for: distill's model is its teacher; profile's
# batch_sizes default is the run's, which the shared --batch-sizes sets
STANDS_FOR = {("distill", "teacher"), ("profile", "batch_sizes")}


def _function(step: str):
    return command_function(step)


@pytest.mark.parametrize("step", list(STEPS))
def test_every_config_field_has_an_option(step):
    params = {p.name: p for p in COMMANDS[step].params}
    fields = step_class(step).Config.model_fields
    missing = [f for f in fields if f not in params]
    assert missing == [], f"optkit {step} cannot set {missing}"
    for name, field in fields.items():
        param = params[name]
        assert param.opts, name
        if not field.is_required() and field.default is not None and not isinstance(field.default, (list, dict)) \
                and param.default is not None:
            assert param.default == field.default, f"{step} --{name}: CLI default {param.default!r} vs config {field.default!r}"


@pytest.mark.parametrize("step", list(STEPS))
def test_no_config_field_is_declared_by_hand(step):
    declared = set(inspect.signature(_function(step).__wrapped__).parameters)
    fields = set(step_class(step).Config.model_fields)
    assert {(step, f) for f in declared & fields} <= STANDS_FOR, f"optkit {step} declares Config fields by hand"
    assert declared - COMMAND_LEVEL - fields == set(), f"optkit {step} declares options that are not command-level"


@pytest.mark.parametrize("step", list(STEPS))
def test_option_help_is_the_field_description(step):
    params = {p.name: p for p in COMMANDS[step].params}
    for name, field in step_class(step).Config.model_fields.items():
        if (step, name) in STANDS_FOR or not field.description:
            continue
        start = " ".join(field.description.split())[:40].lower()
        assert start in " ".join(params[name].help.split()).lower(), f"optkit {step} --{name}: help is not its description"


def test_the_flag_table_names_real_fields():
    for key in FLAGS:
        step, _, name = key.rpartition(".")
        assert any(name in step_class(s).Config.model_fields for s in ([step] if step else STEPS)), key


def test_every_step_command_is_generated():
    assert all(hasattr(_function(step), "__wrapped__") for step in STEPS)


class _Sent(Exception):
    pass


@pytest.fixture
def sent(monkeypatch):
    """The step options a command hands to the engine (the run itself is skipped)."""
    from optkit.cli import common

    seen: dict = {}

    def record(*, step, options, model, **_):
        seen.update(step=step, model=model, options=options)
        raise _Sent

    monkeypatch.setattr(common, "run_one_step", record)

    def options(*args: str) -> dict:
        with pytest.raises(_Sent):
            invoke(*args)
        return seen["options"]
    return options


UNSET = "<not sent: the Config's default applies>"


@pytest.mark.parametrize("args, options", [
    (["export", "m", "-o", "o.onnx"], {"opset": UNSET, "dynamic_axes": UNSET}),
    (["export", "m", "-o", "o.onnx", "--dynamic-axis", "none", "--static-batch", "--opset", "17"],
     {"dynamic_axes": [], "dynamic_batch": False, "opset": 17}),
    (["export", "m", "-o", "o.onnx", "--dynamic-axis", "ids:1", "--dynamic-axis", "mask:1"], {"dynamic_axes": ["ids:1", "mask:1"]}),
    (["quantize", "m.onnx", "-o", "q.onnx"], {"calib_data": UNSET, "exclude": UNSET, "max_drop": UNSET, "per_channel": True}),
    (["quantize", "m.onnx", "-o", "q.onnx", "--per-tensor", "--calib-data", "c.npz", "--exclude", "Conv"],
     {"per_channel": False, "calib_data": "c.npz", "exclude": ["Conv"]}),
    (["prune", "m", "-o", "p", "--global", "--unstructured", "--sparsity", "0.5", "--lr", "0.01"],
     {"global_pruning": True, "unstructured": True, "sparsity": 0.5, "lr": 0.01}),
    (["prune", "m", "-o", "p", "--uniform"], {"global_pruning": False, "ratio": UNSET}),
    (["compile", "m.onnx", "-o", "c.onnx"], {"target": "ort-cpu"}),
    (["distill", "--teacher", "t", "-o", "d", "--student-width", "0.5", "--train-data", "t.npz"],
     {"student_width": 0.5, "train_data": "t.npz", "student": UNSET, "teacher": UNSET}),
])
def test_command_line_values_reach_the_config(sent, args, options):
    got = sent(*args)
    assert {k: got.get(k, UNSET) for k in options} == options
    assert None not in got.values()


def test_distill_needs_a_student(tmp_path):
    result = invoke("distill", "--teacher", "t", "-o", str(tmp_path / "d"))
    assert result.exit_code == 2 and "distill needs a student" in result.output


@pytest.mark.parametrize("args, flag", [
    (["compile", "m.onnx", "-o", "c.onnx", "--target", "nosuch"], "--target"),
    (["prune", "m", "-o", "p", "--ratio", "2"], "--ratio"),
    (["distill", "--teacher", "t", "-o", "d", "--student-width", "0.5", "--batch-size", "0"], "--batch-size"),
])
def test_a_bad_value_names_the_flag(args, flag):
    result = invoke(*args)
    assert result.exit_code == 2 and f"error: {flag}" in result.output, result.output


def test_quantize_help_lists_every_config_field():
    result = invoke("quantize", "--help")
    flags = result.output.replace("\n", " ")
    for name in step_class("quantize").Config.model_fields:
        assert f"--{name.replace('_', '-')}" in flags, name


def test_a_generated_option_reaches_the_step(tiny_onnx, tmp_path):
    out = tmp_path / "q.onnx"
    result = invoke("quantize", str(tiny_onnx), "-o", str(out), "--mode", "static", "--calib-batch-size", "4",
                    "--skip-small-convs", "0", "--no-reduce-range", "--max-accuracy-drop", "50", "--no-measure", *FAST)
    assert result.exit_code == 0, result.output
    params = sidecar(out)["record"]["params"]
    assert (params["calib_batch_size"], params["skip_small_convs"], params["reduce_range"]) == (4, 0, False)
    assert sidecar(out)["record"]["details"]["calib_batch_size"] == 4


def test_a_bad_generated_option_is_a_usage_error(tiny_onnx, tmp_path):
    result = invoke("quantize", str(tiny_onnx), "-o", str(tmp_path / "q.onnx"), "--calib-batch-size", "0")
    assert result.exit_code == 2 and "--calib-batch-size" in result.output
