"""Pure parts of quantize: strided calibration reading, exclusion matching, small-conv detection."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from optkit.types.errors import UsageError
from optkit.eval.data import EvalData
from optkit.steps.quantize.modes import _stride, _StridedReader, resolve_exclude, small_convs


def test_reader_streams_batches_in_strides():
    data = EvalData(inputs={"x": np.arange(50, dtype=np.float32).reshape(50, 1)}, labels=None)
    reader = _StridedReader(data, batch_size=8, samples=42)
    assert len(reader) == 6 and reader.samples == 42
    stride = _stride(len(reader))
    assert stride == 3 and len(reader) % stride == 0
    seen = []
    for start in range(0, len(reader), stride):  # how ONNX Runtime drives it with CalibStridedMinMax
        reader.set_range(start, start + stride)
        while (batch := reader.get_next()) is not None:
            seen.append(batch["x"][:, 0])
    assert np.concatenate(seen).tolist() == list(range(42)) and max(len(b) for b in seen) == 8


def test_histogram_calibration_reads_whole_batches_only():
    """ONNX Runtime's entropy/percentile calibrators stack every batch: a shorter tail batch made them fail."""
    data = EvalData(inputs={"x": np.arange(50, dtype=np.float32).reshape(50, 1)}, labels=None)
    reader = _StridedReader(data, batch_size=8, samples=42, whole_batches=True)
    assert reader.samples == 40 and len(reader) == 5
    assert {len(b["x"]) for b in iter(reader.get_next, None)} == {8}
    few = _StridedReader(data, batch_size=64, samples=42, whole_batches=True)  # fewer than a batch: all of them
    assert few.samples == 42 and len(few) == 1


def test_stride_of_a_prime_batch_count_is_one():
    assert _stride(7) == 1 and _stride(8) == 4 and _stride(1) == 1


def _model():
    w1 = numpy_helper.from_array(np.zeros((4, 1, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="stem"),
             helper.make_node("Conv", ["a", "w2"], ["b"], name="body"),
             helper.make_node("Relu", ["b"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], [w1, w2])
    return helper.make_model(graph)


def test_exclude_by_name_and_op_type():
    model = _model()
    assert resolve_exclude(model, ["stem"], "m") == ["stem"]
    assert resolve_exclude(model, ["Conv"], "m") == ["body", "stem"]
    with pytest.raises(UsageError, match="'nope' matches no node"):
        resolve_exclude(model, ["Relu", "nope"], "m")


def test_small_convs():
    assert small_convs(_model(), 4) == ["stem"]
    assert small_convs(_model(), 0) == []
