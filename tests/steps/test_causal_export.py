"""export on a text-generation model: one ONNX graph with past key/values, verified by greedy tokens against
transformers' generate (a Llama-style model built here from a config, random weights)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.hf_models import llama_folder

PROMPTS = [[0, 40, 41, 42, 43], [5, 6, 7], [0, *range(50, 90)]]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = llama_folder(tmp_path_factory.mktemp("llama") / "model")
    return folder, AutoModelForCausalLM.from_pretrained(str(folder)).eval()


@pytest.fixture(scope="module")
def exported(llama, tmp_path_factory):
    from optkit.backends import onnx_io
    from optkit.steps._causal_export import export_causal_lm

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    layout = export_causal_lm(llama[1], path)
    return onnx_io.produced_artifact(path, "export", "text-generation"), layout


def _ctx(tmp_path: Path, prompts: list[list[int]]):
    from optkit.eval.data import EvalData
    from optkit.eval.measure import MeasureSettings
    from optkit.steps.base import StepContext
    from optkit.types.ui import UI

    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), 2, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)], mask[row, :len(prompt)] = prompt, 1
    data = EvalData(inputs={"input_ids": ids, "attention_mask": mask}, labels=None)
    return StepContext(ui=UI(quiet=True), data=data, settings=MeasureSettings(), out_tmp=tmp_path / "out.onnx",
                       out_final=tmp_path / "final.onnx")


def _source(folder: Path):
    from optkit.types.artifact import Artifact, TensorSpec

    return Artifact(path=folder, format="torch", task="text-generation",
                    inputs=[TensorSpec("input_ids", ("batch", "sequence"), "int64")],
                    outputs=[TensorSpec("logits", ("batch", "sequence", "vocab"))])


def test_graph_has_past_and_present_with_dynamic_axes(exported):
    import onnx

    artifact, layout = exported
    model = onnx.load(str(artifact.path))
    onnx.checker.check_model(model, full_check=True)
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*model.graph.input, *model.graph.output]}
    assert dims["input_ids"] == ["batch", "sequence"]
    assert dims["attention_mask"] == ["batch", "total_sequence"]
    assert dims["logits"][:2] == ["batch", "sequence"]
    for i in range(layout.layers):
        assert dims[f"past_key_values.{i}.key"] == ["batch", layout.kv_heads, "past_sequence", layout.head_dim]
        assert dims[f"present.{i}.value"] == ["batch", layout.kv_heads, "total_sequence", layout.head_dim]
    assert layout.layers == 2 and layout.kv_heads == 2


def test_size_is_the_weights(llama, exported):
    params = sum(p.numel() for p in llama[1].parameters())
    assert 0.9 < exported[0].path.stat().st_size / (4 * params) < 1.3


def test_batch_two_with_a_past_matches_torch(llama, exported):
    """Dynamic batch and past length: two sequences, a prompt then a 2-token continuation on its cache."""
    import onnxruntime as ort
    import torch

    artifact, layout = exported
    model = llama[1]
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    ids = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]], dtype=np.int64)
    empty = {n: np.zeros((2, layout.kv_heads, 0, layout.head_dim), np.float32) for n in layout.past_names()}
    first = session.run(None, {"input_ids": ids[:, :4], "attention_mask": np.ones((2, 4), np.int64),
                               "position_ids": np.tile(np.arange(4), (2, 1)), **empty})
    past = dict(zip(layout.past_names(), first[1:]))
    second = session.run(None, {"input_ids": ids[:, 4:], "attention_mask": np.ones((2, 6), np.int64),
                                "position_ids": np.tile(np.arange(4, 6), (2, 1)), **past})
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(second[0], want[:, 4:], atol=1e-4, rtol=1e-3)
    assert second[1].shape == (2, layout.kv_heads, 6, layout.head_dim)


def test_ort_greedy_equals_transformers_on_three_prompts(llama, exported):
    from optkit.steps._causal_export import verify_greedy

    check = verify_greedy(llama[1], exported[0], PROMPTS, max_new_tokens=12)
    assert check.same and check.prompts == 3 and check.prompt_tokens == [5, 3, 41]
    assert check.max_prefill_logit_diff < 1e-4


def test_export_step_on_a_text_generation_model(llama, tmp_path):
    from optkit.steps.export import ExportConfig, ExportStep

    result = ExportStep().run(_ctx(tmp_path, PROMPTS), _source(llama[0]), ExportConfig())
    assert result.artifact is not None and result.artifact.path == tmp_path / "out.onnx"
    import onnx

    graph = onnx.load(str(result.artifact.path), load_external_data=False).graph
    assert {"input_ids", "attention_mask", "position_ids", "past_key_values.1.value"} <= {i.name for i in graph.input}
    # as data feeds it (the ledger's measuring): its prefill, token ids and mask in, logits out
    assert [i.name for i in result.artifact.inputs] == ["input_ids", "attention_mask"]
    assert [o.name for o in result.artifact.outputs] == ["logits"]
    details = result.details
    assert details.generation.same and details.generation.prompts == 3
    assert "greedy tokens = transformers'" in ExportStep.describe(details)
    assert ExportStep.Details.model_validate(details.to_json()).generation == details.generation


def test_export_step_fails_when_greedy_tokens_differ(llama, tmp_path, monkeypatch):
    from optkit.steps import _causal_export
    from optkit.steps.export import ExportConfig, ExportStep
    from optkit.types.errors import StepError

    real = _causal_export.hf_greedy

    def off_by_one(model, prompt, n):
        tokens = real(model, prompt, n)
        return tokens[:2] + [(tokens[2] + 1) % 300] + tokens[3:] if len(prompt) == 3 else tokens

    monkeypatch.setattr(_causal_export, "hf_greedy", off_by_one)
    with pytest.raises(StepError) as err:
        ExportStep().run(_ctx(tmp_path, PROMPTS), _source(llama[0]), ExportConfig())
    assert err.value.exit_code == 1
    assert "prompt 2 of 3" in err.value.message and "new token 3" in err.value.message


def test_text_generation_export_needs_token_text(llama, tmp_path):
    from optkit.eval.data import EvalData
    from optkit.steps._causal_export import prompts_of
    from optkit.types.errors import UsageError

    with pytest.raises(UsageError, match="needs evaluation text") as err:
        prompts_of(EvalData(inputs={"x": np.zeros((2, 3), np.float32)}, labels=None))
    assert err.value.exit_code == 2 and "--text-data" in (err.value.hint or "")
