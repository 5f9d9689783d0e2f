"""Representative bad inputs through a real `python -m optkit` process: what a user's shell sees (exit status,
stderr), including the cases that cannot run in-process (os._exit at import) or that guard the machine
(/dev/null, a memory-sized input shape, a malicious pickle)."""
from __future__ import annotations

import os
import stat

import pytest

from tests.badinput.conftest import dev_null_is_intact
from tests.badinput.helpers import check_case, run_cli

B = "--budget-s", "0.05"


def test_export_to_dev_null(tiny, dev_null_guard, tmp_path):
    check_case(["export", tiny["folder"], "-o", "/dev/null", *B], 2, ["/dev/null"], tmp_path=tmp_path, runner=run_cli)
    assert dev_null_is_intact() and stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["export", "profile"])
def test_pt2_with_malicious_member(pickles, tiny, tmp_path, command):
    args = [command, pickles["evil_pt2"], "--eval-data", tiny["eval"], *B]
    if command == "export":
        args += ["-o", tmp_path / "out" / "m.onnx"]
    try:
        check_case(args, 2, ["sample_inputs/model.pt"], tmp_path=tmp_path, runner=run_cli)
    finally:
        appeared = pickles["marker"].exists()
        pickles["marker"].unlink(missing_ok=True)
        if appeared:
            pytest.fail("the malicious pickle inside the .pt2 was unpickled: its marker file appeared")


@pytest.mark.parametrize("kind", ["os_exit", "sys_exit"])
def test_factory_exiting_at_import(factories, tmp_path, kind):
    check_case(["export", f"{factories[kind]}:build", "--input-shape", "input:1x1x8x8",
                "-o", tmp_path / "out" / "m.onnx", *B], 2, ["exit", "import"], tmp_path=tmp_path, runner=run_cli)


def test_input_shape_larger_than_memory(tiny, tmp_path):
    """1x1x100000x100000 float32 is ~37 GiB: refused with the estimate, before anything is allocated
    (the subprocess runs under an address-space cap, so a real allocation fails rather than the machine)."""
    check_case(["export", f"{tiny['model_py']}:build", "--weights", tiny["weights"],
                "--input-shape", "input:1x1x100000x100000", "-o", tmp_path / "out" / "m.onnx", *B],
               2, [("GB", "GiB")], tmp_path=tmp_path, runner=run_cli)


def test_profile_truncated_onnx(bad_models, tmp_path):
    check_case(["profile", bad_models["truncated_onnx"], *B], 2, ["truncated.onnx"], tmp_path=tmp_path, runner=run_cli)


def test_quantize_static_nan_calibration(tiny_onnx, bad_data, tmp_path):
    check_case(["quantize", tiny_onnx, "-o", tmp_path / "out" / "q.onnx", "--mode", "static",
                "--calib-data", bad_data["calib_nan"], *B], 2, [("calib_nan.npz", "'input'")],
               tmp_path=tmp_path, runner=run_cli)


def test_run_bad_yaml(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: [unclosed\nsteps: {{{\n")
    check_case(["run", recipe], 2, ["YAML"], tmp_path=tmp_path, runner=run_cli)


def test_report_malformed_sidecar(bad_sidecars, tmp_path):
    check_case(["report", bad_sidecars["json_list"]], 2, ["tiny.onnx.optkit.json"], tmp_path=tmp_path, runner=run_cli)
