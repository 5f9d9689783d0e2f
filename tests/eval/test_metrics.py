from __future__ import annotations

import numpy as np
import pytest

from optkit.eval.metrics import fidelity, mismatch, top1


def test_top1():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert top1(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)


def test_fidelity_identical_and_scaled():
    a = {"y": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)}
    same = fidelity(a, a)
    assert same.max_abs_diff == 0 and same.cosine == pytest.approx(1.0)
    scaled = fidelity({"y": a["y"] * 2}, a)
    assert scaled.max_abs_diff == pytest.approx(4.0) and scaled.cosine == pytest.approx(1.0)
    flipped = fidelity({"y": -a["y"]}, a)
    assert flipped.min_cosine == pytest.approx(-1.0)


def test_fidelity_matches_by_position_when_names_differ():
    assert fidelity({"out": np.ones((2, 2))}, {"logits": np.ones((2, 2))}).max_abs_diff == 0


def test_mismatch_uses_atol_plus_rtol():
    ref = np.array([100.0, 1.0])
    ok, max_abs, _ = mismatch(ref + np.array([0.05, 0.0]), ref, atol=1e-4, rtol=1e-3)
    assert ok and max_abs == pytest.approx(0.05)
    ok, _, ratio = mismatch(ref + np.array([0.0, 0.01]), ref, atol=1e-4, rtol=1e-3)
    assert not ok and ratio > 1
