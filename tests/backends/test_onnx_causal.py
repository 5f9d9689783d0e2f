"""backends/onnx_causal.OrtCausalLM: ONNX Runtime on a causal-LM export with past key/values, one token at a time
with its own KV cache, against transformers on the same weights."""
from __future__ import annotations

import numpy as np
import pytest

from tests.hf_models import llama_folder


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(transformers model, its ONNX export as an Artifact)."""
    from transformers import AutoModelForCausalLM

    from optkit.backends import onnx_io
    from optkit.steps._causal_export import export_causal_lm

    root = tmp_path_factory.mktemp("ortlm")
    model = AutoModelForCausalLM.from_pretrained(str(llama_folder(root / "model"))).eval()
    export_causal_lm(model, root / "model.onnx")
    return model, onnx_io.produced_artifact(root / "model.onnx", "export", "text-generation")


def test_start_then_steps_match_transformers_logits(pair):
    import torch

    from optkit.backends.generative import open_causal_lm

    model, artifact = pair
    tokens = [0, 17, 33, 81, 120, 7, 64]
    with torch.no_grad():
        want = model(torch.tensor([tokens])).logits[0].numpy()
    with open_causal_lm(artifact, threads=1) as lm:
        assert type(lm).__name__ == "OrtCausalLM"
        prompt = lm.start(np.array([tokens[:4]]))
        assert prompt.shape == (4, want.shape[1]) and prompt.dtype == np.float32
        steps = [lm.step(t) for t in tokens[4:]]
        np.testing.assert_allclose(prompt, want[:4], atol=1e-4)
        np.testing.assert_allclose(np.stack(steps), want[4:], atol=1e-4)
        # a second start forgets the first sequence
        np.testing.assert_allclose(lm.start(np.array([tokens])), want, atol=1e-4)


def test_greedy_matches_generate_with_a_stop_token(pair):
    from optkit.backends.generative import greedy
    from optkit.backends.onnx_causal import OrtCausalLM
    from optkit.steps._causal_export import hf_greedy

    model, artifact = pair
    want = hf_greedy(model, [0, 5, 6], 10)
    with OrtCausalLM(artifact, threads=2) as lm:
        assert greedy(lm, np.array([[0, 5, 6]]), 10) == want
        stop = want[3]
        assert greedy(lm, np.array([[0, 5, 6]]), 10, stop=(stop,)) == want[:want.index(stop) + 1]


def test_step_before_start_and_a_graph_without_a_cache(pair, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from optkit.backends import onnx_io
    from optkit.backends.onnx_causal import OrtCausalLM
    from optkit.types.errors import UsageError

    with OrtCausalLM(pair[1]) as lm, pytest.raises(RuntimeError, match="before start"):
        lm.step(3)
    graph = helper.make_graph([helper.make_node("Identity", ["input_ids"], ["logits"])], "plain",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.INT64, ["b", "s"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "plain.onnx"))
    with pytest.raises(UsageError, match="not a causal-LM export with a KV cache") as err:
        OrtCausalLM(onnx_io.produced_artifact(tmp_path / "plain.onnx", "export", "text-generation"))
    assert err.value.exit_code == 2
