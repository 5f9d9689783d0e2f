"""Issue 30: verdicts that could not fail. Each check here gets an input it must reject: an all-zero output scored
cosine 1, a NaN or one-value output passed every budget, an atol check on 1e-9 outputs compared nothing, and the
accuracy guard warned that there was no task metric while one judged."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from optkit.eval.data import EvalData
from optkit.eval.metrics import degenerate, fidelity, mismatch, output_stats
from optkit.types.errors import StepError, UsageError
from optkit.types.records import Check, Metrics, OutputStats, StepRecord
from tests.fakes import fake_backend  # noqa: F401 (fixture)

RNG = np.random.default_rng(0)
REF = {"y": RNG.standard_normal((6, 5)).astype(np.float32)}


# ------------------------------------------------------------------------------------------- cosine (item 1)

def test_an_all_zero_output_has_cosine_0_not_1():
    fid = fidelity({"y": REF["y"] * 0}, REF)
    assert fid.cosine == 0.0 and fid.min_cosine == 0.0
    assert fidelity(REF, {"y": REF["y"] * 0}).cosine == 0.0  # either side
    zeros = {"y": np.zeros((3, 4))}
    assert fidelity(zeros, zeros).cosine == 1.0  # both zero: the same answer


def test_one_zero_sample_pulls_the_mean_cosine_down():
    out = REF["y"].copy()
    out[2] = 0
    fid = fidelity({"y": out}, REF)
    assert fid.min_cosine == 0.0 and fid.cosine == pytest.approx(5 / 6)


def test_nan_is_never_close():
    out = REF["y"].copy()
    out[1, 3] = np.nan
    fid = fidelity({"y": out}, REF)
    assert fid.max_abs_diff == np.inf and fid.min_cosine == 0.0 and fid.cosine == pytest.approx(5 / 6)
    same = fidelity({"y": out}, {"y": out.copy()})  # the same NaN on both sides: the same answer
    assert same.cosine == 1.0 and same.max_abs_diff == 0.0


# ----------------------------------------------------------------------------------- degenerate (item 2)

def test_degenerate_names_the_output_and_the_samples():
    out = REF["y"].copy()
    out[[1, 4]] = np.nan
    assert degenerate({"y": out}, REF) == "output 'y' is NaN on 2 of 6 samples where the reference's is finite"
    out[0, 0] = np.inf
    assert "NaN or infinite on 3 of 6" in degenerate({"y": out}, REF)
    assert degenerate({"y": out}) == "output 'y' is NaN or infinite on 3 of 6 samples"  # the model alone
    assert degenerate({"y": REF["y"] * 0}, REF, "the input's") == \
        "output 'y' is all zero on all 6 samples where the input's is not"
    constant = np.repeat(REF["y"][:1], 6, axis=0)
    assert degenerate({"y": constant}, REF) == "output 'y' is the same on all 6 samples where the reference's varies"
    near = constant + RNG.standard_normal(constant.shape).astype(np.float32) * 1e-9  # jitter is no answer either
    assert "the same on all 6" in degenerate({"y": near}, REF)


def test_degenerate_is_relative_to_the_reference():
    assert degenerate(REF, REF) is None and degenerate({"y": REF["y"] * 0.5}, REF) is None
    zeros, ones = {"y": np.zeros((4, 3), np.float32)}, {"y": np.ones((4, 3), np.float32)}
    assert degenerate(zeros, zeros) is None  # a reference that is all zero: no fault
    assert degenerate(ones, {"y": np.full((4, 3), 2.0, np.float32)}) is None  # a reference that is constant too
    nan = {"y": np.full((4, 3), np.nan, np.float32)}
    assert degenerate(nan, nan) is None  # NaN where the reference is NaN: not this candidate's doing
    assert degenerate({"y": np.zeros((1, 3))}, {"y": np.ones((1, 3))}) is not None  # one sample: all zero still
    assert degenerate({"y": np.ones((1, 3))}, {"y": np.full((1, 3), 2.0)}) is None  # one sample: no spread to lose


def test_degenerate_handles_integer_bool_and_renamed_outputs():
    labels = {"idx": np.array([0, 2, 1, 2])}
    assert degenerate({"idx": np.zeros(4, np.int64)}, labels) is not None
    assert degenerate({"idx": np.array([1, 1, 1, 1])}, labels) == \
        "output 'idx' is the same on all 4 samples where the reference's varies"
    mask = {"m": np.array([[True, False], [False, True]])}
    assert degenerate({"m": np.zeros((2, 2), bool)}, mask) is not None and degenerate(mask, mask) is None
    assert degenerate({"renamed": REF["y"] * 0}, REF) is not None  # matched by position, as fidelity does


def test_output_stats_show_a_collapse():
    stats = output_stats({"y": REF["y"], "z": np.zeros((6, 2), np.float32)})
    assert stats[0].std > 0 and stats[0].min < stats[0].max and stats[0].nonfinite_samples == 0
    assert stats[1].to_json() == {"name": "z", "shape": [6, 2], "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0,
                        "nonfinite_samples": 0}
    out = REF["y"].copy()
    out[2, 1] = np.nan
    nan_stats = output_stats({"y": out})[0]
    assert nan_stats.nonfinite_samples == 1 and np.isfinite(nan_stats.mean)


def test_the_ledger_prints_output_stats():
    from io import StringIO

    from rich.console import Console

    from optkit.report.ledger import ledger_markdown, render_ledger
    from optkit.types.ledger import ledger_rows

    stats = output_stats({"logits": np.zeros((4, 3), np.float32)})
    rec = StepRecord(step="original", artifact="m.onnx", format="onnx", sha256="0" * 64, size_bytes=1,
                     metrics=Metrics(output_stats=stats))
    rows = ledger_rows([rec])
    assert rows[0].output_stats[0].std == 0.0 and rows[0].to_json()["output_stats"][0]["std"] == 0.0
    console = Console(file=StringIO(), width=200)
    render_ledger(console, rows)
    assert "outputs: logits mean 0 std 0 min 0 max 0" in console.file.getvalue()
    assert "- 0 original: logits mean 0 std 0 min 0 max 0" in ledger_markdown(rows)


# ------------------------------------------------------------------------------ tiny magnitudes (item 3)

def test_an_atol_check_on_1e9_outputs_still_compares_them():
    ref = RNG.standard_normal((4, 10)) * 1e-9
    assert not mismatch(ref * 0, ref, atol=1e-4, rtol=1e-3)[0]  # passed before: every |diff| < 1e-4
    assert not mismatch(ref * 1.5, ref, atol=1e-4, rtol=1e-3)[0]
    assert not mismatch(-ref, ref, atol=1e-4, rtol=1e-3)[0]
    assert mismatch(ref * (1 + 1e-6), ref, atol=1e-4, rtol=1e-3)[0]  # float noise still passes
    big = RNG.standard_normal((4, 10)) * 10  # unit scale and above: atol as given
    assert mismatch(big + 5e-5, big, atol=1e-4, rtol=0)[0] and not mismatch(big + 2e-4, big, atol=1e-4, rtol=0)[0]


def test_mismatch_edges():
    zeros = np.zeros(5)
    assert mismatch(zeros, zeros, atol=0, rtol=0)[0]  # 0/0 was NaN: an exact match failed a zero tolerance
    assert not mismatch(zeros + 1e-12, zeros, atol=0, rtol=0)[0]
    assert mismatch(zeros + 1e-5, zeros, atol=1e-4, rtol=0)[0]  # a reference exactly 0 keeps atol
    out = np.ones(5)
    out[2] = np.nan
    ok, max_abs, ratio = mismatch(out, np.ones(5), atol=1e-4, rtol=1e-3)
    assert not ok and max_abs == np.inf and ratio == np.inf


def _gemm(path: Path, weights: np.ndarray, scale: float = 1.0) -> Path:
    import onnx
    from onnx import TensorProto as T, helper as h, numpy_helper as nh

    graph = h.make_graph([h.make_node("MatMul", ["x", "W"], ["y"])], "g",
                         [h.make_tensor_value_info("x", T.FLOAT, ["batch", 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["batch", 4])],
                         [nh.from_array((weights * scale).astype(np.float32), "W")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_weights_models(tmp_path):
    """A random-weight model whose outputs are ~1e-9, its exact copy, one 1.5x off, and one that outputs zeros."""
    from optkit.backends.opening import open_artifact

    w = np.random.default_rng(1).standard_normal((8, 4)) * 1e-9
    return {name: open_artifact(_gemm(tmp_path / f"{name}.onnx", w, scale))
            for name, scale in (("ref", 1.0), ("copy", 1.0), ("off", 1.5), ("zero", 0.0))}


DATA = EvalData({"x": np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)}, None)


def _verify(ref, cand):
    from optkit.eval.compare import verify_outputs

    return verify_outputs(ref, cand, DATA, atol=1e-4, rtol=1e-3, batch_sizes=[1, 8], threads=1, what="simplified",
                          hint="hint")


def test_verify_outputs_rejects_a_1e9_model_that_is_off(tiny_weights_models):
    m = tiny_weights_models
    assert _verify(m["ref"], m["copy"]).max_abs_diff == 0.0
    with pytest.raises(StepError, match="output 'y' differs from the onnx model"):
        _verify(m["ref"], m["off"])
    with pytest.raises(StepError, match="simplified model: output 'y' is all zero on 1 sample where the onnx model's"):
        _verify(m["ref"], m["zero"])


def test_verify_outputs_refuses_nan_from_the_reference_as_bad_input(tmp_path):
    import onnx
    from onnx import TensorProto as T, helper as h

    from optkit.backends.opening import open_artifact

    graph = h.make_graph([h.make_node("Log", ["x"], ["y"])], "g", [h.make_tensor_value_info("x", T.FLOAT, ["batch", 8])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["batch", 8])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "log.onnx"))
    art = open_artifact(tmp_path / "log.onnx")
    with pytest.raises(UsageError, match="the onnx model log.onnx: output 'y' is NaN on 1 of 1 sample"):
        _verify(art, art)


# ------------------------------------------------------------------------------------- accuracy check (2, 4)

def _offset_outputs(n: int = 16) -> tuple[dict, dict]:
    """A reference riding on a large offset, and a 'quantized' copy with one value for every sample: cosine 1.0."""
    ref = 100 + RNG.standard_normal((n, 4)).astype(np.float32) * 1e-3
    return {"y": ref}, {"y": np.full((n, 4), 100.0, np.float32)}


def test_accuracy_check_fails_a_constant_output_that_scores_cosine_1():
    from optkit.eval.compare import accuracy_check, check_text, tolerance_error

    ref, flat = _offset_outputs()
    assert fidelity(flat, ref).cosine > 0.99999  # the fooled verdict: cosine alone passes it
    check = accuracy_check(ref, flat, EvalData({"x": np.zeros((16, 8), np.float32)}, None), None, 1.0, None)
    assert not check.ok and check.degenerate == "output 'y' is the same on all 16 samples where the input's varies"
    assert check.limit == "outputs not degenerate and cosine >= 0.99"
    assert check_text(check).startswith("degenerate: output 'y'")
    err = tolerance_error("static quantization", check, ["try another --mode"])
    assert err.message.startswith("static quantization is degenerate: output 'y' is the same on all 16 samples")
    assert err.hint == "Try another --mode" and "min-cosine" not in err.one_line()


def test_accuracy_check_with_a_metric_names_it_and_fails_nan():
    from optkit.eval.compare import accuracy_check
    from optkit.eval.task_metric import resolve_metric

    x = RNG.standard_normal((16, 4)).astype(np.float32)
    data = EvalData({"x": x}, x.argmax(1))
    nan = x.copy()
    nan[[0, 5, 9]] = np.nan  # top-1 of NaN logits is still a number: it must not be what judges
    check = accuracy_check({"y": x}, {"y": nan}, data, resolve_metric("top1", Path.cwd()), 1.0, None)
    assert not check.ok and check.judged_metric and check.metric == "top1" and check.drop is None
    assert check.degenerate == "output 'y' is NaN on 3 of 16 samples where the input's is finite"
    assert check.limit == "outputs not degenerate and top1 drop <= 1 pt"
    good = accuracy_check({"y": x}, {"y": x * 0.9}, data, resolve_metric("top1", Path.cwd()), 1.0, None)
    assert good.ok and good.degenerate is None and good.drop == 0.0


def test_accuracy_check_refuses_an_input_model_with_nan_as_bad_input():
    from optkit.eval.compare import accuracy_check

    x = RNG.standard_normal((8, 4)).astype(np.float32)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(UsageError, match="the input model: output 'y' is NaN on 1 of 8 samples"):
        accuracy_check({"y": bad}, {"y": x}, EvalData({"x": x}, None), None, 1.0, None)


def test_the_guard_warns_of_no_task_metric_only_when_there_is_none():
    from optkit.steps.quantize.guard import budget_warning

    judged = Check(ok=False, limit="top1 drop <= 0.5 pt", metric="top1", input_value=0.9, value=0.8, drop=10.0)
    assert budget_warning(0.5, judged) is None  # the typed check was read like a dict: it always warned
    cosine = Check(ok=False, limit="cosine >= 0.99", cosine_vs_input=0.9, min_cosine=0.99)
    assert budget_warning(0.5, cosine) == ("--max-drop 0.5 is a budget on the task metric, and there is none (no "
                                           "labels, no --metric): the guard judges cosine >= 0.99 instead (set it "
                                           "with --min-cosine)")


def test_the_guard_ranks_a_degenerate_check_last():
    from optkit.steps.quantize.guard import _badness

    collapsed = Check(ok=False, limit="x", cosine_vs_input=1.0, min_cosine=0.99, degenerate="output 'y' is ...")
    poor = Check(ok=False, limit="x", cosine_vs_input=0.5, min_cosine=0.99)
    assert _badness(collapsed) > _badness(poor)


# -------------------------------------------------------------------------------------- optimize's judge

def test_the_calibration_judge_rejects_an_all_zero_candidate(fake_backend, tmp_path):
    from optkit.optimize.model import Outcome
    from optkit.optimize.judge import CalibrationJudge, judge
    from optkit.optimize.space import Budget, CandidateRecipe

    calib = tmp_path / "calib.npz"
    np.savez(calib, x=RNG.standard_normal((16, 4)).astype(np.float32))
    source = fake_backend(tmp_path, "source")
    judge_calib = CalibrationJudge(source, calib, None)
    assert judge_calib.verdict(fake_backend(tmp_path, "half", scale=0.5)).degenerate is None
    zero = fake_backend(tmp_path, "zero", scale=0.0)
    verdict = judge_calib.verdict(zero)
    assert verdict.degenerate == "output 'y' is all zero on all 16 samples where the original's is not"
    assert verdict.reasons(Budget()) == [verdict.degenerate] and verdict.to_json()["degenerate"] == verdict.degenerate
    stats = [OutputStats(name="y", shape=[16, 4], mean=0.1, std=1.0, min=-2.0, max=2.0)]
    original = StepRecord(step="original", artifact=str(source.path), format="fake", sha256="0" * 64, size_bytes=1,
                          metrics=Metrics(output_stats=stats))
    record = StepRecord(step="fake", artifact=str(zero.path), format="fake", sha256="1" * 64, size_bytes=1,
                        metrics=Metrics(output_stats=[OutputStats(name="y", shape=[16, 4], mean=0, std=0, min=0, max=0)]))
    outcome = Outcome(CandidateRecipe("zeroed", "fake", "int8", [], "a candidate whose output is all zero"))
    outcome.artifact, outcome.status = zero.with_(record=record, lineage=[original]), "built"
    judge(outcome, Budget(), judge_calib)
    assert outcome.status == "rejected"
    assert outcome.why == ("degenerate outputs on the calibration split: output 'y' is all zero on all 16 samples "
                           "where the original's is not")


def test_the_evaluation_verdict_reads_a_collapse_from_the_ledger(fake_backend, tmp_path):
    from optkit.optimize.model import Outcome
    from optkit.optimize.judge import evaluation_verdict, judge
    from optkit.optimize.space import Budget, CandidateRecipe

    art = fake_backend(tmp_path, "cand")
    varies = [OutputStats(name="y", shape=[16, 4], mean=0.1, std=1.0, min=-2.0, max=2.0)]
    flat = [OutputStats(name="y", shape=[16, 4], mean=3.0, std=0.0, min=3.0, max=3.0)]

    def rec(step: str, stats: list[OutputStats], digest: str) -> StepRecord:
        return StepRecord(step=step, artifact=str(art.path), format="fake", sha256=digest * 64, size_bytes=1,
                          metrics=Metrics(output_stats=stats))

    collapsed = art.with_(record=rec("compile", flat, "1"), lineage=[rec("original", varies, "0")])
    assert evaluation_verdict(collapsed).degenerate == \
        "output 'y' is 3 everywhere where the original's varies (std 1)"
    assert evaluation_verdict(art.with_(record=rec("compile", varies, "1"),
                                        lineage=[rec("original", varies, "0")])).degenerate is None
    outcome = Outcome(CandidateRecipe("flat", "fake", "int8", [], "collapsed"))
    outcome.artifact, outcome.status = collapsed, "built"
    judge(outcome, Budget(), None)
    assert outcome.status == "rejected" and outcome.why.startswith("degenerate outputs on the evaluation split")
