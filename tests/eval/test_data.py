from __future__ import annotations

import numpy as np
import pytest

from optkit.types.artifact import TensorSpec
from optkit.types.errors import UsageError
from optkit.eval.data import load_npz, synthetic

SPEC = [TensorSpec("input", ("batch", 1, 4, 4))]


def test_load_casts_and_batches(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, input=np.arange(5 * 16, dtype=np.float16).reshape(5, 1, 4, 4), labels=np.arange(5))
    data = load_npz(path, SPEC)
    assert data.inputs["input"].dtype == np.float32 and len(data) == 5 and len(data.sha256) == 64
    batches = list(data.batches(2))
    assert [real for _, real in batches] == [2, 2, 1]
    assert all(feed["input"].shape[0] == 2 for feed, _ in batches)  # last batch padded by wrapping
    assert data.batch(7)["input"].shape == (7, 1, 4, 4)


@pytest.mark.parametrize("arrays,needle", [
    ({"x": np.zeros((2, 1, 4, 4), np.float32)}, "no array 'input'"),
    ({"input": np.zeros((2, 1, 5, 4), np.float32)}, "2x1x5x4"),
    ({"input": np.zeros((2, 16), np.float32)}, "2x16"),
    ({"input": np.zeros((2, 1, 4, 4), np.float32), "labels": np.zeros(3)}, "different numbers"),
])
def test_mismatched_data_is_a_usage_error(tmp_path, arrays, needle):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(UsageError, match=needle):
        load_npz(path, SPEC)


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, input=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UsageError, match="not a readable"):
        load_npz(path, SPEC)


def test_synthetic_is_seeded():
    a, b = synthetic(SPEC, 3), synthetic(SPEC, 3)
    np.testing.assert_array_equal(a.inputs["input"], b.inputs["input"])
    assert a.labels is None and a.synthetic
