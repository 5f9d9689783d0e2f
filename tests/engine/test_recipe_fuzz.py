"""Fuzz the recipe loader: valid and broken recipes alike end in exit 0 or a clean exit 2, never a traceback."""
from __future__ import annotations

import pytest

from unittest import mock

import typer.testing
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from optkit.cli.app import app
from optkit.steps.base import STEPS

# Typer rebuilds the command tree on every invoke (~0.1 s); build it once for 600 runs.
COMMAND = typer.testing._get_command(app)

STEP_OPTIONS = {  # real option names (and a few typos) with plausible and implausible values
    "export": ["opset", "dynamic_batch", "exporter", "atol", "opst"],
    "simplify": ["engine", "atol", "rtol", "engin"],
    "fuse": ["level", "transformer", "num_heads", "skip_layer_norm", "levle"],
    "quantize": ["mode", "method", "per_channel", "max_accuracy_drop", "exclude", "metod"],
    "prune": ["ratio", "target_macs", "importance", "finetune_epochs", "round_to", "ratoi"],
    "distill": ["epochs", "temperature", "alpha", "student_width", "teacher", "alpah"],
    "compile": ["target", "precision", "shapes", "tune", "targte"],
    "profile": ["batch_sizes", "threads", "budget_s", "batch_size"],
}
TOP_KEYS = ["model", "weights", "eval_data", "output_dir", "seed", "measure", "steps", "gates", "input_shapes", "modle"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 100), st.floats(-2, 200), st.just(float("nan")), st.just(float("inf")),
    st.sampled_from(["static", "dynamic", "auto", "minmax", "entropy", "ort-cpu", "openvino-cpu", "tensorrt", "int8",
                     "fp16", "l1", "taylor", "x", "", "1x2", "input:1x1x32x32"]),
    st.text(max_size=8),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                        st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


@st.composite
def step_entries(draw):
    name = draw(st.one_of(st.sampled_from(list(STEPS)), st.sampled_from(["exprt", "quantise", ""]), st.text(max_size=6)))
    form = draw(st.integers(0, 4))
    if form == 0:
        return name
    keys = STEP_OPTIONS.get(name, ["x"])
    options = draw(st.dictionaries(st.sampled_from(keys), values, max_size=3))
    if form == 1:
        return {name: options}
    if form == 2:
        return {"name": name, "options": options}
    if form == 3:
        return {name: None}
    return draw(values)


gates = st.lists(st.one_of(
    st.fixed_dictionaries({}, optional={
        "max_accuracy_drop": values, "min_speedup": st.floats(-1, 5), "max_latency_ms": scalars,
        "max_size_mb": scalars, "max_drift": scalars, "batch_size": scalars,
        "step": st.sampled_from(["export", "quantize", "original", "profile", "nope", "0"]),
        "baseline": st.sampled_from(["original", "export", "nope"]), "max_acc": scalars}),
    values), max_size=3)


VALID_STEPS = [
    st.sampled_from([{"export": {"opset": 17}}, {"export": {"opset": 18, "dynamic_batch": False}}, "export"]),
    st.sampled_from(["simplify", {"simplify": {"engine": "onnxslim"}}]),
    st.sampled_from([{"fuse": {"level": "basic"}}, "fuse"]),
    st.fixed_dictionaries({"quantize": st.fixed_dictionaries({}, optional={
        "mode": st.sampled_from(["static", "dynamic", "auto"]), "method": st.sampled_from(["minmax", "entropy"]),
        "per_channel": st.booleans(), "max_accuracy_drop": st.floats(0, 5)})}),
    st.sampled_from([{"compile": {"target": "ort-cpu"}}, {"compile": {"target": "openvino-cpu", "precision": "int8"}}]),
]


@st.composite
def valid_recipes(draw):
    chosen = sorted(draw(st.sets(st.integers(0, len(VALID_STEPS) - 1), min_size=1)))
    steps = [draw(VALID_STEPS[i]) for i in chosen] + draw(st.sampled_from([[], ["profile"]]))
    names = [next(iter(x)) if isinstance(x, dict) else x for x in steps if x != "profile"]
    gate = st.fixed_dictionaries({"max_accuracy_drop": st.floats(0, 3)},
                                 optional={"step": st.sampled_from(names), "baseline": st.sampled_from(["original", *names])})
    raw = {"model": "../m", "output_dir": draw(st.sampled_from(["out", "/tmp/x"])), "seed": draw(st.integers(0, 9)),
           "measure": {"batch_sizes": draw(st.lists(st.integers(1, 16), min_size=1, max_size=3))},
           "steps": steps, "gates": draw(st.lists(st.one_of(gate, st.fixed_dictionaries({"min_speedup": st.floats(0.1, 9)})),
                                                  max_size=3))}
    return yaml.safe_dump(raw, sort_keys=False), draw(st.sampled_from([[], ["measure.budget_s=0.2"]]))


@st.composite
def broken_recipes(draw):
    raw = {"model": draw(st.one_of(st.just("m.onnx"), scalars)), "steps": draw(st.one_of(
        st.lists(step_entries(), max_size=5), values))}
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=4, unique=True)):
        raw[key] = draw(st.one_of(values, gates) if key == "gates" else values)
    if draw(st.booleans()):
        raw["measure"] = draw(st.fixed_dictionaries({}, optional={
            "batch_sizes": st.lists(st.integers(-1, 9), max_size=3), "threads": st.integers(-1, 4),
            "budget_s": st.floats(-1, 2), "enabled": st.booleans(), "budgt": scalars}))
    if draw(st.booleans()):
        raw["gates"] = draw(gates)
    text = yaml.safe_dump(raw, sort_keys=False)
    if draw(st.integers(0, 5)) == 0:  # break the YAML itself now and then
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(["{", "]", ": :", "\t", "- [", "'", "\x00", "&a *b"])) + text[at:]
    overrides = draw(st.lists(st.sampled_from([
        "steps.quantize.method=entropy", "measure.budget_s=0.1", "steps.0.opset=17", "steps.9.x=1", "bad",
        "=1", "steps.quantize=1", "gates=[{min_speedup: 2}]", "measure=3", "seed=-1"]), max_size=2))
    return text, overrides


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@pytest.mark.slow
@given(case=st.one_of(valid_recipes(), broken_recipes()))
def test_loader_never_crashes(tmp_path, case):
    text, overrides = case
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    args = ["run", str(path), "--dry-run"]
    for item in overrides:
        args += ["--set", item]
    with mock.patch.object(typer.testing, "_get_command", return_value=COMMAND):
        result = typer.testing.CliRunner().invoke(app, args)
    event(f"exit {result.exit_code}")
    assert result.exit_code in (0, 2), f"exit {result.exit_code} for\n{text}\n{overrides}\n{result.output}\n{result.exception!r}"
    if result.exit_code == 2:
        assert "Traceback" not in result.output and result.output.strip(), result.output
