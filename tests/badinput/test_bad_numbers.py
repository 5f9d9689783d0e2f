"""Absurd numbers on the command line: refused before any work (exit 2, the error line names the option)."""
from __future__ import annotations

import pytest

from tests.badinput.helpers import run_template

EXPORT = ["export", "{tiny[folder]}", "-o", "{out}"]
PROFILE = ["profile", "{tiny_onnx}"]
QUANT = ["quantize", "{tiny_onnx}", "-o", "{out}", "--mode", "static", "--budget-s", "0.05"]
PRUNE = ["prune", "{tiny_res[folder]}", "-o", "{outdir}", "--budget-s", "0.05"]
B = "--budget-s", "0.05"


def p(cid: str, args: list[str], *needles):
    return pytest.param(args, needles, id=cid)


CASES = [
    p("export-budget-s-0", [*EXPORT, "--budget-s", "0"], "--budget-s"),
    p("profile-budget-s-minus-1", [*PROFILE, "--budget-s", "-1"], "--budget-s"),
    p("profile-budget-s-inf", [*PROFILE, "--budget-s", "inf"], "--budget-s"),
    p("profile-budget-s-nan", [*PROFILE, "--budget-s", "nan"], "--budget-s"),
    p("export-budget-s-99999", [*EXPORT, "--budget-s", "99999"], "--budget-s"),
    p("compare-budget-s-nan", ["compare", "{tiny_onnx}", "{tiny_onnx}", "--budget-s", "nan"], "--budget-s"),
    p("profile-batch-sizes-0", [*PROFILE, *B, "--batch-sizes", "0"], "--batch-sizes"),
    p("profile-batch-sizes-minus-3", [*PROFILE, *B, "--batch-sizes", "-3"], "--batch-sizes"),
    p("profile-batch-sizes-abc", [*PROFILE, *B, "--batch-sizes", "abc"], "--batch-sizes"),
    p("profile-batch-sizes-1,,x", [*PROFILE, *B, "--batch-sizes", "1,,x"], "--batch-sizes"),
    p("profile-batch-sizes-1000000", [*PROFILE, *B, "--batch-sizes", "1000000"], "--batch-sizes"),
    p("export-batch-sizes-0", [*EXPORT, *B, "--batch-sizes", "0"], "--batch-sizes"),
    p("export-threads-minus-1", [*EXPORT, *B, "--threads", "-1"], "--threads"),
    p("simplify-threads-minus-1", ["simplify", "{tiny_onnx}", "-o", "{out}", *B, "--threads", "-1"], "--threads"),
    p("export-opset-0", [*EXPORT, *B, "--opset", "0"], "opset"),
    p("export-opset-999", [*EXPORT, *B, "--opset", "999"], "opset"),
    p("quantize-calib-samples-0", [*QUANT, "--calib-samples", "0"], ("--calib-samples", "calib_samples")),
    p("quantize-calib-samples-minus-5", [*QUANT, "--calib-samples", "-5"], ("--calib-samples", "calib_samples")),
    p("prune-ratio-0", [*PRUNE, "--ratio", "0"], "--ratio"),
    p("prune-ratio-1", [*PRUNE, "--ratio", "1"], "--ratio"),
    p("prune-ratio-1.5", [*PRUNE, "--ratio", "1.5"], "--ratio"),
    p("prune-ratio-minus-0.1", [*PRUNE, "--ratio", "-0.1"], "--ratio"),
    p("export-input-shape-zero-batch", [*EXPORT, *B, "--input-shape", "input:0x1x8x8"], ("--input-shape", "0x1x8x8")),
    p("profile-input-shape-exceeds-memory", ["profile", "{tiny[model_py]}:build", "--weights", "{tiny[weights]}", *B,
                                               "--input-shape", "input:1x1x100000x100000"],
      ("GB", "GiB")),
    p("export-input-shape-garbage", [*EXPORT, *B, "--input-shape", "garbage"], ("--input-shape", "garbage")),
    p("export-input-shape-not-numbers", [*EXPORT, *B, "--input-shape", "input:axbxc"], ("--input-shape", "axbxc")),
    p("debug-samples-0", ["debug", "{tiny_onnx}", "{tiny_int8}", "--samples", "0"], "--samples"),
    p("debug-top-minus-1", ["debug", "{tiny_onnx}", "{tiny_int8}", "--top", "-1"], "--top"),
]


@pytest.mark.parametrize("args,needles", CASES)
def test_absurd_number(request, tmp_path, args, needles):
    run_template(request, tmp_path, args, 2, needles, timeout=30)
