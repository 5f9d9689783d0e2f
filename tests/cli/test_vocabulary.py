"""One name per idea (issue 31, item 10): ``--max-drop`` is every command's budget vs its input model, the old
spellings are hidden flags and recipe keys that still work with one deprecation line, and every list option takes
its values repeated or comma-separated."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from optkit.steps.base import step_class
from tests.conftest import invoke

UNSET = "<not sent>"


class _Sent(Exception):
    pass


@pytest.fixture(autouse=True)
def fresh_deprecations(monkeypatch):
    """Each test sees the deprecation lines a fresh process would print (they are shown once per process)."""
    from optkit.steps import base

    monkeypatch.setattr(base, "_SHOWN", set())


@pytest.fixture
def sent(monkeypatch):
    """What a step command hands to the engine: its step options and measure block (the run itself is skipped)."""
    from optkit.cli import common

    seen: dict = {}

    def record(*, step, options, measure, **_):
        seen.update(step=step, options=options, measure=measure)
        raise _Sent

    monkeypatch.setattr(common, "run_one_step", record)

    def run(*args: str) -> tuple[dict, str]:
        with pytest.raises(_Sent):
            result = invoke(*args)
            pytest.fail(f"the command did not reach the engine: {result.output}")
        return seen, ""
    return run


@pytest.fixture
def searched(monkeypatch):
    """What ``optkit optimize`` hands to the search (the search itself is skipped)."""
    import optkit.optimize.search as engine

    seen: dict = {}

    def record(run):
        seen.update(vars(run))
        raise _Sent

    monkeypatch.setattr(engine, "optimize", record)

    def run(*args: str) -> dict:
        with pytest.raises(_Sent):
            result = invoke("optimize", *args)
            pytest.fail(f"optimize did not reach the search: {result.output}")
        return seen
    return run


# ----------------------------------------------------------------------------- --max-drop, one budget

@pytest.mark.parametrize("args, max_drop, guard", [
    ([], UNSET, False),                                   # the default budget (1 point), no search
    (["--max-drop", "0.5"], 0.5, True),                   # a budget given: the guard searches within it
    (["--max-drop", "0.5", "--no-guard"], 0.5, False),    # ... unless told not to
    (["--guard"], UNSET, True),                           # the guard within the default budget
])
def test_quantize_max_drop_is_the_budget_and_turns_on_the_guard(sent, args, max_drop, guard):
    seen, _ = sent("quantize", "m.onnx", "-o", "q.onnx", *args)
    assert seen["options"].get("max_drop", UNSET) == max_drop
    config = step_class("quantize").Config.model_validate(seen["options"])
    assert config.guard is guard and config.max_drop == (1.0 if max_drop == UNSET else max_drop)


def test_the_old_flag_still_works_and_means_what_it_meant(sent):
    seen, _ = sent("quantize", "m.onnx", "-o", "q.onnx", "--max-accuracy-drop", "0.5")
    config = step_class("quantize").Config.model_validate(seen["options"])
    assert (config.max_drop, config.guard) == (0.5, False)  # what --max-accuracy-drop meant: a budget, no search


def test_the_old_flag_prints_its_deprecation_once():
    result = invoke("quantize", "nosuch.onnx", "-o", "q.onnx", "--max-accuracy-drop", "0.5")
    assert result.exit_code == 2  # the missing model is the error; the flag itself was accepted
    lines = [line for line in result.output.splitlines() if "deprecated" in line]
    assert lines == ["warning: --max-accuracy-drop is deprecated; use --max-drop"], result.output


@pytest.mark.parametrize("step", ["quantize", "compile", "prune"])
def test_old_flags_are_hidden_from_help(step):
    text = invoke(step, "--help").output
    assert "--max-drop" in text and "--max-accuracy-drop" not in text


def test_compile_old_flag_keeps_plain_nncf(sent):
    args = ("compile", "m.onnx", "-o", "c.xml", "--target", "openvino-cpu", "--precision", "int8")
    old = step_class("compile").Config.model_validate(sent(*args, "--max-accuracy-drop", "2")[0]["options"])
    new = step_class("compile").Config.model_validate(sent(*args, "--max-drop", "2")[0]["options"])
    assert (old.max_drop, old.accuracy_control) == (2.0, False)
    assert (new.max_drop, new.accuracy_control) == (2.0, True)
    plain = step_class("compile").Config.model_validate(sent(*args)[0]["options"])
    assert (plain.max_drop, plain.accuracy_control) == (1.0, False)


def test_old_recipe_keys_still_validate_with_a_warning(capsys):
    quantize = step_class("quantize").Config.model_validate({"mode": "static", "max_accuracy_drop": 0.5})
    assert (quantize.max_drop, quantize.guard) == (0.5, False)
    both = step_class("quantize").Config.model_validate({"max_accuracy_drop": 1.0, "max_drop": 0.5})
    assert (both.max_drop, both.guard) == (0.5, True)  # as before: max_drop was the guard's budget
    prune = step_class("prune").Config.model_validate({"ratio": 0.3, "max_accuracy_drop": 2})
    assert prune.max_drop == 2
    err = capsys.readouterr().err
    assert err.count("max_accuracy_drop is deprecated; use max_drop") == 1, err


def test_a_dumped_config_validates_to_the_same():
    """best.yaml and the sidecars keep a Config's dump: read back, the guard keeps its value."""
    Config = step_class("quantize").Config
    for options in ({}, {"max_drop": 0.5}, {"max_drop": 0.5, "guard": False}, {"max_accuracy_drop": 0.5}):
        config = Config.model_validate(options)
        assert Config.model_validate(config.model_dump()).model_dump() == config.model_dump()


def test_shipped_recipes_use_the_new_names():
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    for path in sorted(recipes.glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text())["steps"]:
            if isinstance(entry, dict):
                (name, options), = entry.items()
                old = set(getattr(step_class(name).Config, "RENAMED", {})) & set(options or {})
                assert not old, f"{path.name}: {name} uses {old}"


# ----------------------------------------------------------------------------- lists: repeated or comma-separated

@pytest.mark.parametrize("args, field, value", [
    (["quantize", "m.onnx", "-o", "q.onnx", "--exclude", "Conv,Gemm", "--exclude", "MatMul"], "exclude",
     ["Conv", "Gemm", "MatMul"]),
    (["export", "m", "-o", "o.onnx", "--verify-batch-sizes", "1,4", "--verify-batch-sizes", "8"],
     "verify_batch_sizes", [1, 4, 8]),
    (["export", "m", "-o", "o.onnx", "--dynamic-axis", "ids:1,mask:1"], "dynamic_axes", ["ids:1", "mask:1"]),
    (["export", "m", "-o", "o.onnx", "--dynamic-axis", "none"], "dynamic_axes", []),
])
def test_generated_list_options_take_both_styles(sent, args, field, value):
    assert sent(*args)[0]["options"][field] == value


@pytest.mark.parametrize("args", [["--batch-sizes", "1,8"], ["--batch-sizes", "1", "--batch-sizes", "8"],
                                  ["--batch-sizes", "1", "--batch-sizes", "8,"]])
def test_batch_sizes_take_both_styles(sent, args):
    assert sent("quantize", "m.onnx", "-o", "q.onnx", *args)[0]["measure"]["batch_sizes"] == [1, 8]


def test_a_bad_list_value_names_its_flag():
    result = invoke("export", "m", "-o", "o.onnx", "--verify-batch-sizes", "1,x")
    assert result.exit_code == 2 and "error: --verify-batch-sizes" in result.output, result.output
    result = invoke("quantize", "m.onnx", "-o", "q.onnx", "--batch-sizes", "1", "--batch-sizes", "zero")
    assert result.exit_code == 2 and "--batch-sizes" in result.output, result.output


@pytest.mark.parametrize("args", [["--targets", "ort-cpu,openvino-cpu"], ["--targets", "ort-cpu", "--targets", "openvino-cpu"]])
def test_optimize_targets_take_both_styles(searched, args, tmp_path):
    assert searched("m.onnx", "-o", str(tmp_path / "o"), *args)["targets"] == ("ort-cpu", "openvino-cpu")


def test_serve_and_loadtest_lists_take_both_styles():
    from optkit.cli.serve import _sizes

    assert _sizes(["4", "8,16"], "--preferred-batch") == _sizes("4,8,16", "--preferred-batch") == (4, 8, 16)
    result = invoke("loadtest", "m.onnx", "--batch-policy", "adaptive", "--batch-policy", "greedy")
    assert result.exit_code == 2 and "policies are adaptive and delay" in result.output
