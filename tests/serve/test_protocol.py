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


# ------------------------------------------------------------------ values a model must never be given

F32 = {"x": TensorSpec("x", ("batch", 3), "float32")}


def _json_body(datatype: str, data, shape=(1, 3), name: str = "x") -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": list(shape), "data": data}]}).encode()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_fp32_json_is_refused_naming_the_input(literal):
    """Python's json reads NaN, Infinity and 1e999 (as inf) without complaint; a model must not be run on them."""
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, %s, 2.0]}]}' % literal.encode()
    with pytest.raises(ProtocolError, match="input 'x'.*NaN or infinite") as info:
        parse_infer(body, None, F32)
    assert info.value.status == 400


def test_fp16_values_beyond_its_range_are_refused():
    specs = {"x": TensorSpec("x", ("batch", 3), "float16")}
    with pytest.raises(ProtocolError, match="input 'x'.*beyond FP16"):
        parse_infer(_json_body("FP16", [1.0, 70000.0, 2.0]), None, specs)


def test_non_finite_binary_fp32_is_refused():
    body, headers = encode_request({"x": np.array([[1.0, np.nan, 2.0]], np.float32)})
    with pytest.raises(ProtocolError, match="input 'x'.*NaN"):
        parse_infer(body, headers[HEADER_LENGTH], F32)


@pytest.mark.parametrize("data, words", [
    ([1.5, 2], "non-integer"),                # 1.5 would be truncated to 1
    (["1", "2"], "not a list of INT64"),      # numpy would parse the strings
    ([2**70, 1], "not a list of INT64"),      # beyond any integer type
    ([[1], 2], "not a list of INT64"),        # ragged
    ([float("nan"), 1], "non-integer"),
])
def test_int64_json_takes_integers_only(data, words):
    body = json.dumps({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": data},
                                  {"name": "mask", "datatype": "INT64", "shape": [1, 2], "data": [1, 1]}]}).encode()
    with pytest.raises(ProtocolError, match=f"input 'ids'.*{words}"):
        parse_infer(body, None, SPECS)


def test_integral_floats_are_taken_for_int64():
    body = json.dumps({"inputs": [{"name": "ids", "datatype": "INT64", "shape": [1, 2], "data": [3.0, 4.0]},
                                  {"name": "mask", "datatype": "INT64", "shape": [1, 2], "data": [1, 1]}]}).encode()
    req = parse_infer(body, None, SPECS)
    assert req.inputs["ids"].dtype == np.int64 and req.inputs["ids"].tolist() == [[3, 4]]


def test_int8_values_beyond_its_range_are_refused():
    specs = {"q": TensorSpec("q", ("batch", 2), "int8")}
    with pytest.raises(ProtocolError, match="input 'q'.*beyond INT8"):
        parse_infer(_json_body("INT8", [1, 300], (1, 2), "q"), None, specs)


def test_json_nested_100000_deep_is_a_400():
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ProtocolError, match="nested too deeply") as info:
        parse_infer(body, None, F32)
    assert info.value.status == 400


# ------------------------------------------------------------- the app: versions and deep bodies, in process

def test_unknown_versions_are_404_and_deep_bodies_400(tiny_onnx):
    import asyncio

    pytest.importorskip("starlette")
    from optkit.serve.app import ModelServer, build_app
    from optkit.types.serve_config import ServeConfig
    from tests.serve.test_app import _call

    good = _json_body("FP32", [0.0] * 64, (1, 1, 8, 8), "input")
    deep = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    nan = _json_body("FP32", [0.0] * 63 + [float("nan")], (1, 1, 8, 8), "input")

    async def go(fast: bool):
        server = ModelServer(tiny_onnx, ServeConfig())
        app = build_app(server, fast_infer=fast)
        await server.start()
        try:
            return [await _call(app, "POST", "/v2/models/tiny/versions/1/infer", good),
                    await _call(app, "POST", "/v2/models/tiny/versions/2/infer", good),
                    await _call(app, "POST", "/v2/models/tiny/versions/latest/infer", good),
                    await _call(app, "GET", "/v2/models/tiny/versions/1"),
                    await _call(app, "GET", "/v2/models/tiny/versions/7"),
                    await _call(app, "GET", "/v2/models/tiny/versions/7/ready"),
                    await _call(app, "POST", "/v2/models/tiny/infer", deep),
                    await _call(app, "POST", "/v2/models/tiny/infer", nan)]
        finally:
            await server.stop()

    for fast in (True, False):
        answers = asyncio.run(go(fast))
        assert [a[0] for a in answers] == [200, 404, 404, 200, 404, 404, 400, 400], (fast, answers)
        assert "no version '2'" in json.loads(answers[1][2])["error"]
        assert "nested too deeply" in json.loads(answers[6][2])["error"]
        assert "input 'input'" in json.loads(answers[7][2])["error"]
