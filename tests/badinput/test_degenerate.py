"""Degenerate outputs (issue 30): a model whose outputs are NaN, all zero or the same for every sample is refused,
never scored. NaN from the user's model is bad input (exit 2, naming the output and how many samples); a step whose
product lost what its input computes failed (exit 1). Nothing is written either way."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.helpers import assert_clean_failure, check_case, cli, run_template
from tests.fakes import fake_engine  # noqa: F401 (fixture)

B = "--budget-s", "0.05"


def _save(model, path: Path) -> Path:
    import onnx

    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def degenerate_models(tmp_path_factory) -> dict[str, Path]:
    """ONNX and torch models that compute NaN (0/0 on an all-zero sample, as an all-zero attention mask does), a
    Gemm whose output sits on a large offset (static int8 flattens it to one value, cosine still 1.0), and data."""
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    d = tmp_path_factory.mktemp("degenerate")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 8)).astype(np.float32)
    files: dict[str, Path] = {}
    # y = x / sum(|x|) per sample: NaN on the all-zero samples
    files["nan_onnx"] = _save(h.make_model(h.make_graph(
        [h.make_node("Abs", ["x"], ["a"]), h.make_node("ReduceSum", ["a", "axes"], ["s"], keepdims=1),
         h.make_node("Div", ["x", "s"], ["y"])], "nan",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 8])], [h.make_tensor_value_info("y", T.FLOAT, ["batch", 8])],
        [nh.from_array(np.array([1], np.int64), "axes")])), d / "nan.onnx")
    # y = x @ W + 100 with |W| ~ 1e-4: int8 over [0, 100] has one level for every sample
    weights = (rng.standard_normal((8, 4)) * 1e-4).astype(np.float32)
    files["offset_onnx"] = _save(h.make_model(h.make_graph(
        [h.make_node("Gemm", ["x", "W", "b"], ["y"], name="gemm")], "offset",
        [h.make_tensor_value_info("x", T.FLOAT, ["batch", 8])], [h.make_tensor_value_info("y", T.FLOAT, ["batch", 4])],
        [nh.from_array(weights, "W"), nh.from_array(np.full(4, 100, np.float32), "b")])), d / "offset.onnx")
    masked = x.copy()
    masked[[3, 10, 17]] = 0
    files["masked"] = d / "masked.npz"
    np.savez(files["masked"], x=masked)
    files["eval"] = d / "eval.npz"
    np.savez(files["eval"], x=x)
    files["eval_labels"] = d / "eval_labels.npz"
    np.savez(files["eval_labels"], x=x, labels=(x @ weights).argmax(1))
    files["calib"] = d / "calib.npz"
    np.savez(files["calib"], x=rng.standard_normal((32, 8)).astype(np.float32))
    files["nan_py"] = d / "masked_model.py"
    files["nan_py"].write_text(textwrap.dedent('''
        import torch
        from torch import nn


        class Masked(nn.Module):
            """Attention-style weights normalised by their sum: an all-masked sample is 0/0."""

            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(8, 4)

            def forward(self, x):
                w = torch.relu(x)
                return self.fc(w / w.sum(1, keepdim=True))


        def build():
            torch.manual_seed(0)
            return Masked().eval()
    '''))
    torch_x = rng.standard_normal((16, 8)).astype(np.float32)
    torch_x[[2, 5]] = -np.abs(torch_x[[2, 5]])  # every value <= 0: relu gives an all-zero row
    files["torch_eval"] = d / "torch_eval.npz"
    np.savez(files["torch_eval"], input=torch_x, labels=np.zeros(16, np.int64))
    return files


def p(cid: str, args: list[str], *needles):
    return pytest.param(args, needles, id=cid)


NAN_NEEDLES = ("'y'", "NaN", "3 of 32 samples")
TORCH_NEEDLES = ("NaN", "2 of 16 samples", "masked_model.py")
M = "{degenerate_models[nan_onnx]}"

USERS_MODEL = [  # NaN inside the user's model: exit 2, what is NaN and on how many samples
    p("profile-nan-onnx", ["profile", M, "--eval-data", "{degenerate_models[masked]}", *B], *NAN_NEEDLES),
    p("profile-nan-onnx-top1", ["profile", M, "--eval-data", "{degenerate_models[masked]}", "--metric", "cosine", *B],
      *NAN_NEEDLES),
    p("simplify-nan-onnx", ["simplify", M, "-o", "{out}", "--eval-data", "{degenerate_models[masked]}", *B],
      *NAN_NEEDLES),
    p("simplify-nan-onnx-no-measure", ["simplify", M, "-o", "{out}", "--eval-data", "{degenerate_models[masked]}",
                                       "--no-measure"], "'y'", "NaN", "at batch 8"),
    p("quantize-nan-onnx-no-measure", ["quantize", M, "-o", "{out}", "--mode", "dynamic", "--eval-data",
                                       "{degenerate_models[masked]}", "--no-measure"], *NAN_NEEDLES),
    p("export-nan-torch", ["export", "{degenerate_models[nan_py]}:build", "-o", "{out}", "--input-shape", "input:1x8",
                           "--eval-data", "{degenerate_models[torch_eval]}", *B], *TORCH_NEEDLES),
    p("profile-nan-torch", ["profile", "{degenerate_models[nan_py]}:build", "--input-shape", "input:1x8",
                            "--eval-data", "{degenerate_models[torch_eval]}", *B], *TORCH_NEEDLES),
]


@pytest.mark.parametrize("args,needles", USERS_MODEL)
def test_nan_from_the_users_model_is_bad_input(request, tmp_path, args, needles):
    run_template(request, tmp_path, args, 2, needles, timeout=120)


QUANT_OFFSET = ["quantize", "{degenerate_models[offset_onnx]}", "-o", "{out}", "--mode", "static",
                "--calib-data", "{degenerate_models[calib]}", *B]
STEP_PRODUCT = [  # a product with one value for every sample, whose cosine to its input is still 1.00000: exit 1
    p("quantize-static-constant-output", [*QUANT_OFFSET, "--no-guard", "--eval-data", "{degenerate_models[eval]}"],
      "degenerate", "'y'", "same on all 32 samples"),
    p("quantize-static-constant-output-top1", [*QUANT_OFFSET, "--no-guard", "--eval-data",
                                               "{degenerate_models[eval_labels]}"], "degenerate", "same on all 32 samples"),
]


@pytest.mark.parametrize("args,needles", STEP_PRODUCT)
def test_a_step_whose_output_collapsed_fails(request, tmp_path, args, needles):
    run_template(request, tmp_path, args, 1, needles, timeout=120)


def test_the_guard_with_a_metric_does_not_say_there_is_none(request, tmp_path):
    """quantize --max-drop judged by top-1 (labels): the warning that there is no task metric must not appear (it
    read the typed check like a dict, so it always did); without labels it does, naming what judges instead."""
    guard = [*QUANT_OFFSET, "--max-drop", "1", "--guard-max-trials", "2"]
    with_metric = run_template(request, tmp_path, [*guard, "--eval-data", "{degenerate_models[eval_labels]}"], 1,
                               ["--max-drop 1"], timeout=180)
    assert "there is none" not in with_metric.stderr, with_metric.stderr
    without = run_template(request, tmp_path, [*guard, "--eval-data", "{degenerate_models[eval]}"], 1,
                           ["--max-drop 1"], timeout=180)
    assert "--max-drop 1 is a budget on the task metric, and there is none" in without.stderr, without.stderr
    assert "cosine >= 0.99" in without.stderr


def test_a_recipe_step_whose_product_is_all_zero_fails(fake_engine):
    """The engine measures every step's product: all zero where its input is not fails the step (exit 1); the run
    reports the failure (as every failed run does) and writes no artifact."""
    import json

    fake_engine.recipe("[{fake: {scale: 0.0}}]")
    result = cli("run", fake_engine.folder / "recipe.yaml")
    line = assert_clean_failure(result, 1, "step 'fake'", "'y'", "all zero on all 32 samples")
    assert "where the input's is not" in line
    assert not list(fake_engine.out.glob("*.fake.json*"))
    assert json.loads((fake_engine.out / "report.json").read_text())["status"] == "step failed"


def test_profile_of_an_artifact_that_lost_its_originals_answers_is_bad_input(fake_engine, tmp_path):
    """An artifact whose outputs are all zero where the original's (its reference outputs beside it) are not, as a
    tflite int8 built before this check: profile refuses it (exit 2) instead of timing zeros."""
    import json

    fake_engine.recipe("[{fake_export: {}}]")
    result, _ = fake_engine.run()
    assert result.exit_code == 0, result.output
    (made,) = fake_engine.out.glob("*.fake.json")
    made.write_text(json.dumps({**json.loads(made.read_text()), "scale": 0.0}))
    check_case(["profile", made, "--eval-data", fake_engine.data, *B], 2,
               ["'y'", "all zero on all 32 samples where the original model's is not"], tmp_path=tmp_path)


def test_a_legit_constant_output_is_not_refused(fake_engine):
    """A reference that is itself all zero (every sample's input 0) makes an all-zero product no fault."""
    np.savez(fake_engine.data, x=np.zeros((8, 4), np.float32))
    fake_engine.recipe("[{fake: {scale: 0.5}}]")
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    assert report["status"] == "passed"


def test_compare_shows_cosine_0_for_a_model_whose_output_is_multiplied_by_0(tiny_onnx, tmp_path):
    """Acceptance: an all-zero output used to score cosine 1.0 vs a non-zero one."""
    import json

    import onnx
    from onnx import helper as h, numpy_helper as nh

    model = onnx.load(str(tiny_onnx))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_raw" if o == out else o for o in node.output]
    model.graph.initializer.append(nh.from_array(np.zeros((), np.float32), "zero"))
    model.graph.node.append(h.make_node("Mul", [f"{out}_raw", "zero"], [out], name="times_zero"))
    zeroed = tmp_path / "zeroed.onnx"
    onnx.save(model, str(zeroed))
    result = cli("compare", tiny_onnx, zeroed, "--json", *B)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["artifacts"]
    assert rows[0]["fidelity_vs_first"]["cosine"] == pytest.approx(1.0)
    assert rows[1]["fidelity_vs_first"]["cosine"] == 0.0 and rows[1]["fidelity_vs_first"]["min_cosine"] == 0.0


@pytest.mark.slow
def test_optimize_never_crowns_a_collapsed_candidate(degenerate_models, tmp_path):
    """Acceptance: static int8 flattens the offset model's output to one value (cosine 1.00000); optimize rejects
    those candidates with the reason in its report and crowns another."""
    import json

    out = tmp_path / "opt"
    result = cli("optimize", degenerate_models["offset_onnx"], "-o", out, "--targets", "ort-cpu",
                 "--calib-data", degenerate_models["calib"], "--eval-data", degenerate_models["eval"], "--json",
                 timeout=300)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    by_name = {c["name"]: c for c in report["candidates"]}
    static = by_name["ort-int8-static"]
    assert static["status"] == "rejected" and "degenerate" in static["why"] and "same on all" in static["why"]
    assert report["winner"] not in ("ort-int8-static", "ort-int8-static-entropy")
    assert "degenerate" in (out / "report.md").read_text()
