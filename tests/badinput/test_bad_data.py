"""Bad .npz data for --eval-data / --calib-data / --train-data / --data: wrong shapes and dtypes, and data that
must never yield a number (labels out of range or not integers, NaN/Inf, no samples, object / string / complex
arrays). Each is refused before any work: exit 2, the error line names the file and/or the array."""
from __future__ import annotations

import pytest

from tests.badinput.helpers import run_template

B = "--budget-s", "0.05"
EXPORT = ["export", "{tiny[folder]}", "-o", "{out}", *B]
PROFILE_ONNX = ["profile", "{tiny_onnx}", *B]
SIMPLIFY = ["simplify", "{tiny_onnx}", "-o", "{out}", *B]
FUSE = ["fuse", "{tiny_onnx}", "-o", "{out}", *B]
COMPILE = ["compile", "{tiny_onnx}", "-o", "{out}", "--target", "ort-cpu", *B]
QUANT_STATIC = ["quantize", "{tiny_onnx}", "-o", "{out}", "--mode", "static", *B]
PRUNE_FT = ["prune", "{tiny_res[folder]}", "-o", "{outdir}", "--ratio", "0.25", "--finetune-epochs", "1", *B]
DISTILL = ["distill", "--teacher", "{tiny_res[folder]}", "--student-width", "0.5", "--epochs", "1", "-o", "{outdir}", *B]
COMPARE = ["compare", "{tiny_onnx}", "{tiny_onnx}", *B]
DEBUG = ["debug", "{tiny_onnx}", "{tiny_int8}"]


def names(key: str, array: str = "input") -> tuple[str, str]:
    """The error line names the file or the array (either will do)."""
    if not array:
        return (f"{key}.np",)
    # 'labels' is specific enough bare; the generic word input must be quoted as an array name
    return (f"{key}.np", array) if array != "input" else (f"{key}.np", "'input'", '"input"', "array input")


def case(cid: str, base: list[str], flag: str, key: str, array: str = "input"):
    return pytest.param([*base, flag, "{bad_data[%s]}" % key], (names(key, array),), id=cid)


SHAPES_AND_DTYPES = [
    case("export-eval-shape-9x9", EXPORT, "--eval-data", "shape_9x9"),
    case("export-eval-rank3", EXPORT, "--eval-data", "rank3"),
    case("export-eval-no-input-array", EXPORT, "--eval-data", "no_input"),
    case("export-eval-junk-npz", EXPORT, "--eval-data", "junk_npz", array=""),
    case("export-eval-empty-npz", EXPORT, "--eval-data", "empty_npz"),
    case("export-eval-npy-not-npz", EXPORT, "--eval-data", "npy_not_npz", array=""),
    case("profile-eval-bool", PROFILE_ONNX, "--eval-data", "bool_input"),
    case("profile-eval-datetime", PROFILE_ONNX, "--eval-data", "datetime_input"),
    case("simplify-eval-shape-9x9", SIMPLIFY, "--eval-data", "shape_9x9"),
    case("fuse-eval-rank5", FUSE, "--eval-data", "rank5"),
    case("compile-eval-channels3", COMPILE, "--eval-data", "channels3"),
    case("quantize-calib-shape-9x9", QUANT_STATIC, "--calib-data", "calib_9x9"),
    case("quantize-calib-no-input-array", QUANT_STATIC, "--calib-data", "calib_no_input"),
    case("quantize-calib-datetime", QUANT_STATIC, "--calib-data", "calib_datetime"),
    case("prune-train-shape-9x9", PRUNE_FT, "--train-data", "train_9x9"),
    case("distill-train-no-input-array", DISTILL, "--train-data", "train_no_input"),
    case("compare-eval-shape-9x9", COMPARE, "--eval-data", "shape_9x9"),
    case("debug-data-shape-9x9", DEBUG, "--data", "calib_9x9"),
]

NEVER_A_NUMBER = [
    case("export-labels-7-out-of-range", EXPORT, "--eval-data", "labels_7", "labels"),
    case("profile-labels-minus-1", PROFILE_ONNX, "--eval-data", "labels_neg", "labels"),
    case("export-labels-float-0.5", EXPORT, "--eval-data", "labels_half", "labels"),
    case("simplify-labels-2d", SIMPLIFY, "--eval-data", "labels_2d", "labels"),
    case("profile-labels-other-length", PROFILE_ONNX, "--eval-data", "labels_short", "labels"),
    case("compare-labels-7", COMPARE, "--eval-data", "labels_7", "labels"),
    case("export-eval-nan-input", EXPORT, "--eval-data", "nan_input"),
    case("profile-eval-inf-input", PROFILE_ONNX, "--eval-data", "inf_input"),
    case("compile-eval-inf-input", COMPILE, "--eval-data", "inf_input"),
    case("quantize-static-calib-nan", QUANT_STATIC, "--calib-data", "calib_nan"),
    case("export-eval-zero-samples", EXPORT, "--eval-data", "zero_samples"),
    case("quantize-static-calib-zero-samples", QUANT_STATIC, "--calib-data", "calib_zero"),
    case("export-eval-object-array", EXPORT, "--eval-data", "object_input"),
    case("quantize-calib-object-array", QUANT_STATIC, "--calib-data", "calib_object"),
    case("profile-eval-unicode-array", PROFILE_ONNX, "--eval-data", "unicode_input"),
    case("simplify-eval-complex-array", SIMPLIFY, "--eval-data", "complex_input"),
    case("prune-train-nan", PRUNE_FT, "--train-data", "train_nan"),
    case("distill-train-labels-7", DISTILL, "--train-data", "train_labels_7", "labels"),
    case("distill-train-labels-float-0.5", DISTILL, "--train-data", "train_labels_half", "labels"),
    case("debug-data-nan", DEBUG, "--data", "calib_nan"),
]


@pytest.mark.parametrize("args,needles", SHAPES_AND_DTYPES)
def test_wrong_shape_or_dtype(request, tmp_path, args, needles):
    run_template(request, tmp_path, args, 2, needles)


@pytest.mark.parametrize("args,needles", NEVER_A_NUMBER)
def test_data_that_never_yields_a_number(request, tmp_path, args, needles):
    run_template(request, tmp_path, args, 2, needles)
