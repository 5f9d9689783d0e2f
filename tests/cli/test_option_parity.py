"""One source of truth for options: every field of every step's Config is reachable from its command."""
from __future__ import annotations

import pytest
from typer.main import get_command

from optkit.cli.app import app
from optkit.cli.from_config import ALIASES
from optkit.steps.base import STEPS, step_class
from tests.conftest import FAST, invoke, sidecar

COMMANDS = get_command(app).commands


@pytest.mark.parametrize("step", list(STEPS))
def test_every_config_field_has_an_option(step):
    params = {p.name: p for p in COMMANDS[step].params}
    fields = step_class(step).Config.model_fields
    missing = [f for f in fields if f not in params and ALIASES.get(f) not in params]
    assert missing == [], f"optkit {step} cannot set {missing}"
    for name, field in fields.items():
        param = params.get(name) or params[ALIASES[name]]
        assert param.opts, name
        if not field.is_required() and field.default is not None and not isinstance(field.default, (list, dict)) \
                and param.default is not None:
            assert param.default == field.default, f"{step} --{name}: CLI default {param.default!r} vs config {field.default!r}"


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
