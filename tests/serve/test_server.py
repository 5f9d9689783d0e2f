"""optkit serve as a user runs it: a real process on 127.0.0.1, Triton's own HTTP client and plain HTTP, answers equal
to offline inference of the same artifact, bad requests answered 400 while the server keeps serving, a full queue
answered 503, and SIGTERM draining what is in flight."""
from __future__ import annotations

import json
import signal
import threading
import time

import numpy as np
import pytest

from tests.serve.conftest import served

import optkit


def offline(artifact, x):
    with optkit.load(artifact) as model:
        return model(x)


def test_triton_client_and_plain_http_give_the_offline_answers(tiny_onnx, tiny):
    http = pytest.importorskip("tritonclient.http")
    with np.load(tiny["eval"]) as data:
        x = data["input"][:5]
    want = offline(tiny_onnx, x)
    with served(tiny_onnx, "--max-batch", "8") as s:
        client = http.InferenceServerClient(url=s.base.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(s.model)
        meta = client.get_model_metadata(s.model)
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        for binary in (True, False):  # Triton's binary tensor extension (its default), then JSON tensors
            inp = http.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            result = client.infer(s.model, [inp], outputs=[http.InferRequestedOutput("logits", binary_data=binary)])
            np.testing.assert_allclose(result.as_numpy("logits"), want, rtol=1e-6, atol=1e-6)
        status, doc = s.infer_json({"input": x[:1]})  # plain HTTP, JSON in and out
        assert status == 200 and doc["outputs"][0]["shape"] == [1, 3]
        np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(1, 3), want[:1], rtol=1e-6, atol=1e-6)
        status, body = s.get("/metrics")
        text = body.decode()
        assert status == 200 and "optkit_batch_size_bucket" in text and 'optkit_requests_total{model="tiny",status="200"} 3.0' in text


def test_bad_requests_get_400_naming_the_problem_and_the_server_keeps_serving(tiny_onnx):
    x = np.zeros((2, 1, 8, 8), np.float32)
    good = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 1, 8, 8], "data": x.ravel().tolist()}]}

    def variant(**change):
        doc = json.loads(json.dumps(good))
        doc["inputs"][0].update(change)
        return json.dumps(doc).encode()

    bad = {
        b"{not json": "not valid JSON",
        b"[]": "JSON object",
        variant(name="x"): "unknown input 'x'",
        variant(datatype="INT64"): "datatype 'INT64'",
        variant(shape=[2, 1, 8]): "rank 3",
        variant(shape=[2, 1, 9, 8]): "dimension 2 is 9",
        variant(data=[1.0, 2.0]): "2 values for shape",
        variant(data="abc"): "not a list of FP32",
        json.dumps({"inputs": []}).encode(): "non-empty list",
    }
    with served(tiny_onnx) as s:
        for body, words in bad.items():
            status, answer, _ = s.post(f"/v2/models/{s.model}/infer", body)
            assert status == 400, (body[:60], answer)
            assert words in json.loads(answer)["error"], (words, answer)
        head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 8, 8],
                                       "parameters": {"binary_data_size": 99}}]}).encode()
        status, answer, _ = s.post(f"/v2/models/{s.model}/infer", head + b"\0" * 99,
                                   {"Inference-Header-Content-Length": str(len(head))})
        assert status == 400 and "binary_data_size 99" in json.loads(answer)["error"]
        status, answer, _ = s.post("/v2/models/nope/infer", variant())
        assert status == 404 and "no model 'nope'" in json.loads(answer)["error"]
        assert s.get("/v2/nothing/here")[0] == 404
        status, doc = s.infer_json({"input": x})
        assert status == 200 and doc["outputs"][0]["shape"] == [2, 3]
        assert s.proc.poll() is None


def _post_in_threads(s, n: int, results: list) -> list[threading.Thread]:
    x = np.zeros((1, 1, 8, 8), np.float32)

    def one():
        results.append(s.infer_json({"input": x})[0])

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
        time.sleep(0.02)
    return threads


def test_a_full_queue_answers_503_and_every_accepted_request_is_answered(tiny_onnx):
    with served(tiny_onnx, "--max-batch", "64", "--max-queue-delay-ms", "1500", "--batch-policy", "delay",
                "--max-queue", "2") as s:
        results: list[int] = []
        threads = _post_in_threads(s, 4, results)  # two wait for their batch to fill, the next two find it full
        for t in threads:
            t.join(30)
        assert sorted(results) == [200, 200, 503, 503]
        status, body = s.get("/metrics")
        assert 'status="503"} 2.0' in body.decode()


@pytest.mark.slow
def test_sigterm_drains_the_requests_in_flight(tiny_onnx):
    with served(tiny_onnx, "--max-batch", "64", "--max-queue-delay-ms", "1500", "--batch-policy", "delay") as s:
        results: list[int] = []
        threads = _post_in_threads(s, 5, results)
        time.sleep(0.3)  # all five wait in the batcher's queue
        s.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert results == [200] * 5  # none lost, none failed
        s.proc.wait(30)
        assert "stopped: 1 batches, 5 rows served" in s.stdout_rest()


def test_the_response_cache_answers_a_repeated_request_and_counts_it(tiny_onnx, tiny):
    with np.load(tiny["eval"]) as data:
        x, other = data["input"][:2], data["input"][2:4]
    with served(tiny_onnx, "--cache-size", "1") as s:
        answers = [s.infer_json({"input": v})[1]["outputs"][0]["data"] for v in (x, x, other, x)]
        assert answers[0] == answers[1] == answers[3] != answers[2]
        text = s.get("/metrics")[1].decode()
        assert 'optkit_cache_total{model="tiny",result="hit"} 1.0' in text  # x, x (hit), other (evicts x), x (miss)
        assert 'optkit_cache_total{model="tiny",result="miss"} 3.0' in text
        assert 'optkit_batch_size_count{model="tiny"} 3.0' in text
