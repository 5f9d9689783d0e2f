"""Open Inference Protocol v2 parsing and encoding: JSON and binary tensors, and the errors that name the problem."""
from __future__ import annotations

import json

import numpy as np
import pytest

from optkit.serve.loadtest import encode_request
from optkit.serve.protocol import HEADER_LENGTH, InferRequest, ProtocolError, encode_infer, parse_infer
from optkit.types.artifact import TensorSpec

SPECS = {"ids": TensorSpec("ids", ("batch", "seq"), "int64"), "mask": TensorSpec("mask", ("batch", "seq"), "int64")}


def test_binary_tensors_round_trip_with_the_header_length():
    ids, mask = np.arange(6, dtype=np.int64).reshape(2, 3), np.ones((2, 3), np.int64)
    body, headers = encode_request({"ids": ids, "mask": mask})
    req = parse_infer(body, headers[HEADER_LENGTH], SPECS)
    np.testing.assert_array_equal(req.inputs["ids"], ids)
    np.testing.assert_array_equal(req.inputs["mask"], mask)
    assert req.binary_default and req.rows == 2
    out, head = encode_infer("m", req, {"y": np.ones((2, 4), np.float32)}, ["y"])
    n = int(head[HEADER_LENGTH])
    doc = json.loads(out[:n])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 32
    np.testing.assert_array_equal(np.frombuffer(out[n:], np.float32).reshape(2, 4), np.ones((2, 4)))


def test_json_tensors_may_be_nested_and_outputs_may_be_chosen():
    doc = {"id": "7", "inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [[1, 2]]},
                                 {"name": "mask", "datatype": "INT64", "shape": [1, 2], "data": [1, 1]}],
           "outputs": [{"name": "b"}]}
    req = parse_infer(json.dumps(doc).encode(), None, SPECS)
    out, head = encode_infer("m", req, {"a": np.zeros(1), "b": np.array([[1.5]], np.float32)}, ["a", "b"])
    assert head["content-type"] == "application/json"
    assert json.loads(out) == {"model_name": "m", "id": "7",
                               "outputs": [{"name": "b", "datatype": "FP32", "shape": [1, 1], "data": [1.5]}]}
    with pytest.raises(ProtocolError, match="unknown output 'c'"):
        encode_infer("m", InferRequest(None, req.inputs, ["c"]), {"a": np.zeros(1)}, ["a"])


@pytest.mark.parametrize("change, words", [
    ({"mask": None}, "missing input mask"),
    ({"ids": {"name": "ids", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3, 4]}}, "disagree on the batch"),
    ({"ids": {"name": "ids", "datatype": "INT64", "shape": [0, 2], "data": []}}, "at least 1"),
    ({"ids": {"name": "ids", "datatype": "INT64", "shape": [1, -2], "data": [1]}}, "non-negative integers"),
])
def test_what_does_not_fit_is_named(change, words):
    items = {"ids": {"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [1, 2]},
             "mask": {"name": "mask", "datatype": "INT64", "shape": [1, 2], "data": [1, 1]}}
    items.update(change)
    body = json.dumps({"inputs": [v for v in items.values() if v is not None]}).encode()
    with pytest.raises(ProtocolError, match=words):
        parse_infer(body, None, SPECS)


def test_unclaimed_binary_bytes_and_a_bad_header_length_are_refused():
    body, headers = encode_request({"ids": np.ones((1, 2), np.int64), "mask": np.ones((1, 2), np.int64)})
    with pytest.raises(ProtocolError, match="not claimed"):
        parse_infer(body + b"xx", headers[HEADER_LENGTH], SPECS)
    with pytest.raises(ProtocolError, match="does not fit"):
        parse_infer(body, str(len(body) + 5), SPECS)
    with pytest.raises(ProtocolError, match="not a number"):
        parse_infer(body, "abc", SPECS)
