"""The task metric: built-ins (CTC decode, mask IoU, max_abs), plugins, drops, and the lossy-step check."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from optkit.types.errors import UsageError
from optkit.eval.compare import accuracy_check, check_text, tolerance_error
from optkit.eval.data import EvalData
from optkit.eval.task_metric import ctc_greedy_decode, resolve_metric
from optkit.types.records import Accuracy


def _one_hot(paths: list[list[int]], classes: int = 5) -> np.ndarray:
    """[batch, time, classes] scores whose argmax follows ``paths``."""
    scores = np.zeros((len(paths), len(paths[0]), classes), np.float32)
    for b, path in enumerate(paths):
        scores[b, np.arange(len(path)), path] = 1.0
    return scores


def _data(n: int, labels=None) -> EvalData:
    return EvalData(inputs={"x": np.zeros((n, 1), np.float32)}, labels=labels)


# ----------------------------------------------------------------------------- CTC

def test_ctc_greedy_decode_merges_repeats_and_drops_blanks():
    scores = _one_hot([[0, 1, 1, 0, 1, 2, 2, 0], [3, 3, 3, 0, 0, 0, 0, 4], [0] * 8])
    assert ctc_greedy_decode(scores) == [(1, 1, 2), (3, 4), ()]


def test_ctc_greedy_decode_custom_blank():
    scores = _one_hot([[0, 1, 1, 0, 4, 4, 2, 4]])
    assert ctc_greedy_decode(scores, blank=4) == [(0, 1, 0, 2)]  # 0 is a plain class here
    assert ctc_greedy_decode(scores) == [(1, 4, 2, 4)]


def test_ctc_greedy_decode_needs_three_dims():
    with pytest.raises(UsageError, match=r"\[batch, time, classes\]"):
        ctc_greedy_decode(np.zeros((2, 5), np.float32))


def test_ctc_blank_argument_is_used(tmp_path):
    ref = _one_hot([[1, 2, 1, 2]])
    out = _one_hot([[1, 1, 2, 1]])  # blank 0: (1, 2, 1, 2) vs (1, 2, 1); blank 2: (1, 1) vs (1, 1)
    default = resolve_metric("ctc_string_match", tmp_path)
    blank2 = resolve_metric("ctc_string_match:2", tmp_path)
    assert default.evaluate({"y": out}, {}, None, {"y": ref}).value == 0.0
    assert blank2.evaluate({"y": out}, {}, None, {"y": ref}).value == 1.0
    with pytest.raises(UsageError, match="blank index"):
        resolve_metric("ctc_string_match:x", tmp_path)


def _argmax_kept_cosine_low(n=16, t=10, c=8, seed=0):
    """Parent and candidate logits with the same argmax at every step, but barely alike as vectors."""
    rng = np.random.default_rng(seed)
    parent = rng.standard_normal((n, t, c)).astype(np.float32)
    cand = rng.standard_normal((n, t, c)).astype(np.float32)
    best = parent.argmax(axis=2)
    np.put_along_axis(cand, best[..., None], cand.max(axis=2, keepdims=True) + 0.5, axis=2)
    np.testing.assert_array_equal(cand.argmax(axis=2), best)
    return {"logits": parent}, {"logits": cand}


def test_ctc_string_match_judges_decodes_not_raw_cosine(tmp_path):
    parent, cand = _argmax_kept_cosine_low()
    data = _data(16)
    metric = resolve_metric("ctc_string_match", tmp_path)
    check = accuracy_check(parent, cand, data, metric, max_drop=1.0, min_cosine=None)
    assert check.cosine_vs_input < 0.9, check
    assert check.ok, check
    assert check.metric == "ctc_string_match" and check.input_value == 1.0 and check.value == 1.0
    assert check.drop == 0.0 and check.min_cosine is None
    assert check.limit == "ctc_string_match drop <= 1 pt"
    text = check_text(check)  # the metric's drop, not the (low) cosine
    assert text.startswith("ctc_string_match drop 0") and text.endswith(" pt") and "cosine" not in text, text

    # no task metric: the cosine judges (0.99 by default), and fails
    plain = accuracy_check(parent, cand, data, None, max_drop=1.0, min_cosine=None)
    assert not plain.ok, plain
    assert plain.min_cosine == 0.99 and plain.metric is None and plain.limit == "cosine >= 0.99"
    err = tolerance_error("quantization", plain, ["try --exclude"])
    assert "--min-cosine" in err.one_line() and "--max-drop" not in err.one_line()

    # a task metric plus an explicit --min-cosine: both judge
    both = accuracy_check(parent, cand, data, metric, max_drop=1.0, min_cosine=0.9)
    assert not both.ok and both.min_cosine == 0.9
    assert both.limit == "ctc_string_match drop <= 1 pt and cosine >= 0.9"


def test_ctc_string_match_counts_changed_strings(tmp_path):
    ref = _one_hot([[1, 0, 2], [3, 3, 0], [0, 4, 4], [1, 1, 1]])
    out = _one_hot([[1, 0, 2], [3, 0, 3], [0, 4, 0], [1, 2, 1]])  # decodes: =, (3,3) != (3,), =, != -> 0.5
    metric = resolve_metric("ctc_string_match", tmp_path)
    check = accuracy_check({"y": ref}, {"y": out}, _data(4), metric, max_drop=49.0, min_cosine=None)
    assert check.value == 0.5 and check.drop == pytest.approx(50.0) and not check.ok
    err = tolerance_error("quantization", check, ["try --exclude"])
    assert "ctc_string_match fell 50.00 points (100.00% -> 50.00%)" in err.one_line()
    assert "raise --max-drop" in err.one_line()
    assert accuracy_check({"y": ref}, {"y": out}, _data(4), metric, max_drop=50.0, min_cosine=None).ok


# ----------------------------------------------------------------------------- mask IoU, max_abs, cosine

def test_mask_iou_default_and_threshold(tmp_path):
    ref = np.array([[[0.9, 0.9, 0.1, 0.1]], [[0.0, 0.0, 0.0, 0.0]]], np.float32)
    out = np.array([[[0.9, 0.4, 0.4, 0.1]], [[0.0, 0.0, 0.0, 0.0]]], np.float32)
    at_half = resolve_metric("mask_iou", tmp_path).evaluate({"m": out}, {}, None, {"m": ref})
    assert at_half.metric == "mask_iou"
    assert at_half.value == pytest.approx((1 / 2 + 1.0) / 2)  # both-empty masks count as identical
    at_03 = resolve_metric("mask_iou:0.3", tmp_path).evaluate({"m": out}, {}, None, {"m": ref})
    assert at_03.value == pytest.approx((2 / 3 + 1.0) / 2)  # {0,1} vs {0,1,2}
    for bad in ("mask_iou:abc", "mask_iou:nan", "mask_iou:inf"):
        with pytest.raises(UsageError):
            resolve_metric(bad, tmp_path)
    with pytest.raises(UsageError, match="differs from the reference"):
        resolve_metric("mask_iou", tmp_path).evaluate({"m": out[:, :, :2]}, {}, None, {"m": ref})


def test_max_abs_is_lower_is_better_in_raw_units(tmp_path):
    metric = resolve_metric("max_abs", tmp_path)
    assert not metric.higher_is_better and not metric.points and metric.unit == ""
    ref = {"y": np.zeros((2, 3), np.float32)}
    got = metric.evaluate({"y": np.array([[0, 0.25, 0], [0, 0, -0.5]], np.float32)}, {}, None, ref)
    assert got.metric == "max_abs" and got.value == pytest.approx(0.5)
    assert got.values["mean_abs"] == pytest.approx(0.75 / 6)
    assert got.higher_is_better is False and got.points is False
    assert metric.drop(0.0, 0.5) == pytest.approx(0.5)     # worse: the error grew, raw units (no x100)
    assert metric.drop(0.5, 0.25) == pytest.approx(-0.25)  # better
    raw = {"metric": "max_abs", "higher_is_better": False, "points": False}
    assert Accuracy(**raw, value=0.5).drop_of(Accuracy(**raw, value=0.0)) == pytest.approx(0.5)

    # inside a lossy step's check the reference is the input: its own max_abs is 0
    parent = {"y": np.ones((4, 3), np.float32)}
    cand = {"y": np.ones((4, 3), np.float32) + 0.01}
    check = accuracy_check(parent, cand, _data(4), metric, max_drop=0.02, min_cosine=None)
    assert check.ok and check.input_value == 0.0 and check.drop == pytest.approx(0.01, abs=1e-6)
    assert check.limit == "max_abs drop <= 0.02"  # no "pt"
    assert check_text(check) == "max_abs 0 -> 0.01"
    assert not accuracy_check(parent, cand, _data(4), metric, max_drop=0.005, min_cosine=None).ok


def test_reference_metrics_need_a_reference(tmp_path):
    for name in ("cosine", "max_abs", "ctc_string_match", "mask_iou"):
        metric = resolve_metric(name, tmp_path)
        assert metric.evaluate({"y": np.ones((2, 3, 4))}, {}, None, None) is None, name


def test_top1_needs_labels_and_builtins_take_no_argument(tmp_path):
    top1 = resolve_metric("top1", tmp_path)
    assert top1.needs_labels
    logits = {"y": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)}
    assert top1.evaluate(logits, {}, None, None) is None
    assert top1.evaluate(logits, {}, np.array([1, 1]), None).value == 0.5
    with pytest.raises(UsageError, match="takes no argument"):
        resolve_metric("top1:3", tmp_path)
    assert resolve_metric(None, tmp_path) is None


def test_cosine_metric(tmp_path):
    metric = resolve_metric("cosine", tmp_path)
    ref = {"y": np.array([[1.0, 0.0], [0.0, 1.0]])}
    got = metric.evaluate({"y": np.array([[1.0, 1.0], [0.0, 2.0]])}, {}, None, ref)
    assert got.metric == "cosine" and got.value == pytest.approx((2 ** -0.5 + 1) / 2)
    assert got.values["min_cosine"] == pytest.approx(2 ** -0.5)


# ----------------------------------------------------------------------------- drops

def test_drop_of_points_and_raw():
    def acc(value: float, **flags: bool) -> Accuracy:
        return Accuracy.model_validate({"metric": "m", "value": value, **flags})

    assert acc(0.85).drop_of(acc(0.9)) == pytest.approx(5.0)  # old ledger rows: fraction, higher better
    assert acc(0.95, points=True, higher_is_better=True).drop_of(
        acc(0.9, points=True, higher_is_better=True)) == pytest.approx(-5.0)
    assert acc(7.5, points=False, higher_is_better=True).drop_of(
        acc(10.0, points=False, higher_is_better=True)) == pytest.approx(2.5)
    assert acc(0.3, points=True, higher_is_better=False).drop_of(
        acc(0.2, points=True, higher_is_better=False)) == pytest.approx(10.0)
    # the baseline's rules decide (a ledger row of an older version may lack the flags: defaults)
    assert acc(0.3).drop_of(acc(0.2, points=False, higher_is_better=False)) == pytest.approx(0.1)


# ----------------------------------------------------------------------------- plugins

def _plugin(folder: Path, body: str, name: str = "mymetric.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


def test_plugin_relative_to_base_with_attributes_and_digest(tmp_path):
    sub = tmp_path / "metrics"
    sub.mkdir()
    _plugin(sub, '''
        import numpy as np

        def wer(outputs, batch):
            out = next(iter(outputs.values()))
            ref = next(iter(batch["reference"].values()))
            assert set(batch) == {"inputs", "labels", "reference"}
            return {"wer": float(np.abs(out - ref).mean()), "n": len(out)}

        wer.higher_is_better = False
        wer.points = False
    ''')
    metric = resolve_metric("metrics/mymetric.py:wer", tmp_path)
    assert metric.spec == str((sub / "mymetric.py").resolve()) + ":wer"
    assert not metric.higher_is_better and not metric.points and not metric.needs_labels
    assert len(metric.digest) == 64
    got = metric.evaluate({"y": np.full((3, 2), 0.5)}, {"x": np.zeros((3, 1))}, None, {"y": np.zeros((3, 2))})
    assert got.to_json() == {"metric": "wer", "value": 0.5, "samples": 3, "higher_is_better": False, "points": False,
                   "values": {"wer": 0.5, "n": 3.0}}
    assert metric.drop(0.5, 0.75) == pytest.approx(0.25)
    # an absolute path ignores the base; an edited plugin has a new digest
    again = resolve_metric(f"{sub / 'mymetric.py'}:wer", tmp_path / "elsewhere")
    assert again.digest == metric.digest
    (sub / "mymetric.py").write_text((sub / "mymetric.py").read_text() + "\n# edited\n")
    assert resolve_metric("metrics/mymetric.py:wer", tmp_path).digest != metric.digest


def test_plugin_defaults_are_higher_is_better_points(tmp_path):
    _plugin(tmp_path, '''
        def score(outputs, batch):
            return {"acc": 0.75}
    ''')
    metric = resolve_metric("mymetric.py:score", tmp_path)
    assert metric.higher_is_better and metric.points
    assert metric.evaluate({"y": __import__("numpy").ones((2, 2))}, {}, None, None).value == 0.75
    assert metric.drop(0.8, 0.75) == pytest.approx(5.0)


@pytest.mark.parametrize("returned", ['"hello"', "{}", "{'a': float('nan')}", "{'a': float('inf')}",
                                      "{'a': 'x'}", "{1: 0.5}", "[0.5]", "None", "{'a': [0.5]}"])
def test_plugin_bad_returns_are_usage_errors(tmp_path, returned):
    _plugin(tmp_path, f'''
        def score(outputs, batch):
            return {returned}
    ''')
    metric = resolve_metric("mymetric.py:score", tmp_path)
    with pytest.raises(UsageError, match="returned"):
        metric.evaluate({"y": np.ones((2, 2))}, {}, None, None)


def test_plugin_that_raises_is_a_usage_error(tmp_path):
    _plugin(tmp_path, '''
        def score(outputs, batch):
            raise KeyError("labels_missing")
    ''')
    metric = resolve_metric("mymetric.py:score", tmp_path)
    with pytest.raises(UsageError, match="failed: KeyError") as info:
        metric.evaluate({"y": np.ones((2, 2))}, {}, None, None)
    assert "labels_missing" in info.value.message and info.value.exit_code == 2


@pytest.mark.parametrize("body,needle", [
    ("import sys\nsys.exit(3)\n", "cannot import metric"),
    ("raise SystemExit('bye')\n", "cannot import metric"),
    ("import not_a_real_module_xyz\n", "not_a_real_module_xyz"),
    ("def score(:\n", "cannot import metric"),
    ("score = 3\n", "'score' is not a function"),
    ("def other(outputs, batch):\n    return {'a': 1.0}\n", "'score' is not a function"),
    ("def score(o, b):\n    return {'a': 1.0}\nscore.higher_is_better = 'no'\n", "must be True or False"),
])
def test_plugin_that_cannot_be_loaded(tmp_path, body, needle):
    _plugin(tmp_path, body)
    with pytest.raises(UsageError) as info:
        resolve_metric("mymetric.py:score", tmp_path)
    assert needle in info.value.message


def test_missing_plugin_file_and_bad_function_name(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        resolve_metric("missing.py:fn", tmp_path)
    _plugin(tmp_path, "def fn(o, b):\n    return {'a': 1.0}\n")
    with pytest.raises(UsageError, match="not a function name"):
        resolve_metric("mymetric.py:not-a-name", tmp_path)


def test_unknown_builtin_suggests_the_closest(tmp_path):
    with pytest.raises(UsageError, match="unknown metric 'ctc_strng_match'") as info:
        resolve_metric("ctc_strng_match", tmp_path)
    assert "Did you mean 'ctc_string_match'?" in info.value.hint
    with pytest.raises(UsageError) as info:
        resolve_metric("nosuch", tmp_path)
    assert "Did you mean" not in info.value.hint and "top1" in info.value.hint


def test_tolerance_error_when_cosine_could_not_be_measured():
    """Outputs whose shapes differ from the input's: fidelity is None, the check fails, and the error must say so."""
    data = _data(2)
    check = accuracy_check({"y": np.ones((2, 3))}, {"y": np.ones((2, 4))}, data, None, max_drop=1.0, min_cosine=None)
    assert not check.ok and check.cosine_vs_input is None
    assert check_text(check) == "cosine not measured"
    try:
        err = tolerance_error("quantization", check, ["try --exclude"])
    except TypeError as exc:
        pytest.fail("optkit bug (optkit/eval/compare.py tolerance_error): formats check['cosine_vs_input'] with "
                    f"':.4f' although it is None when cosine was not measured (outputs differ in shape): {exc}")
    assert "outside tolerance" in err.one_line()


def test_gates_judge_the_chosen_metric_and_cosine():
    from optkit.engine.gates import Gate, evaluate
    from optkit.types.ledger import LedgerRow

    def row(i, step, value, cosine):
        return LedgerRow.model_validate({
            "index": i, "step": step, "artifact": f"/x/{step}.onnx", "format": "onnx", "size_bytes": 1, "sha256": step,
            "accuracy": {"metric": "max_abs", "value": value, "points": False, "higher_is_better": False},
            "fidelity": {"max_abs_diff": value, "mean_abs_diff": value, "cosine": cosine, "min_cosine": cosine}})

    rows = [row(0, "original", 0.0, 1.0), row(1, "quantize", 0.25, 0.995)]
    ok, too_tight, cos_ok, cos_bad = evaluate(
        [Gate(max_accuracy_drop=0.3), Gate(max_accuracy_drop=0.2), Gate(min_cosine=0.99), Gate(min_cosine=0.999)], rows)
    assert ok.passed and ok.measured == pytest.approx(0.25)
    assert "measured 0.25, limit 0.3" in ok.text and " pt" not in ok.text  # raw units, lower is better
    assert not too_tight.passed
    assert cos_ok.passed and "min_cosine 0.99 on quantize: measured 0.99500, limit 0.99" in cos_ok.text
    assert not cos_bad.passed
    (unmeasured,) = evaluate([Gate(min_cosine=0.5)], [rows[0], rows[1].model_copy(update={"fidelity": None})])
    assert not unmeasured.passed and "cannot judge" in unmeasured.text
