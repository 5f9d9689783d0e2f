"""A Hugging Face causal LM folder: recognised as text-generation (safetensors only, tokenizer files recorded), its
plain runner returns logits, and ``TorchCausalLM`` with its own KV cache decodes exactly transformers' greedy
``generate``."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from optkit.backends.generative import GENERATORS, greedy, open_causal_lm
from optkit.backends.opening import open_artifact
from optkit.types.errors import UsageError
from tests.hf_models import llama_folder

PROMPTS = ["the cat runs", "a dog likes the report and", "our team measures int8 kernels"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return llama_folder(tmp_path_factory.mktemp("hf") / "llama")


@pytest.fixture(scope="module")
def hf(llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(llama), AutoModelForCausalLM.from_pretrained(llama).eval()


def test_a_causal_lm_folder_is_text_generation_with_its_tokenizer_files(llama):
    art = open_artifact(llama)
    assert art.format == "torch" and art.source.kind == "hf" and art.source.task == "text-generation"
    assert [(t.name, t.shape, t.dtype) for t in art.inputs] == [
        ("input_ids", ("batch", "sequence"), "int64"), ("attention_mask", ("batch", "sequence"), "int64")]
    vocab = json.loads((llama / "config.json").read_text())["vocab_size"]
    assert [(t.name, t.shape) for t in art.outputs] == [("logits", ("batch", "sequence", vocab))]
    names = {p.name for p in art.files()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja",
            "generation_config.json"} <= names
    assert open_artifact(llama, task="text-generation").source.task == "text-generation"


def test_a_bin_only_causal_lm_is_refused_with_the_fix(llama, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "binonly"
    folder.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(llama / f, folder / f)
    torch.save(load_file(str(llama / "model.safetensors")), folder / "pytorch_model.bin")
    with pytest.raises(UsageError, match="safetensors") as err:
        open_artifact(folder)
    assert "save_pretrained" in err.value.one_line()


def test_the_plain_runner_returns_every_positions_logits(llama, hf):
    import torch

    from optkit.backends.torch import TorchRunner

    tok, model = hf
    ids = tok(PROMPTS[1], return_tensors="np")["input_ids"].astype(np.int64)
    out = TorchRunner(open_artifact(llama)).infer({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.numpy()
    assert list(out) == ["logits"] and out["logits"].shape == want.shape
    np.testing.assert_allclose(out["logits"], want, rtol=1e-4, atol=1e-4)


def test_torch_causal_lm_greedy_is_transformers_generate_token_for_token(llama, hf):
    import torch

    tok, model = hf
    assert GENERATORS["torch"] == "optkit.backends.hf_causal:TorchCausalLM"
    eos = model.generation_config.eos_token_id
    with open_causal_lm(open_artifact(llama)) as lm:
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            want = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=24)[0, ids.shape[1]:].tolist()
            got = greedy(lm, ids.numpy(), 24, stop=(eos,))
            assert got == want, prompt
            # start() forgets the earlier sequence: the prompt's logits are the full model's
            logits = lm.start(ids.numpy())
            with torch.no_grad():
                np.testing.assert_allclose(logits, model(ids).logits[0].numpy(), rtol=1e-4, atol=1e-4)


def test_a_model_that_is_not_a_causal_lm_is_refused(tiny):
    with pytest.raises(UsageError, match="causal"):
        open_causal_lm(open_artifact(tiny["folder"]))


def test_row_0_of_a_causal_lm_is_measured_on_its_text_data(llama, tmp_path, monkeypatch):
    from tests.conftest import invoke
    from tests.hf_models import write_texts

    monkeypatch.chdir(tmp_path)  # profile writes the tokenized splits under ./optkit-out/optkit-data
    texts = write_texts(tmp_path / "texts.txt", n=12)
    result = invoke("profile", str(llama), "--text-data", str(texts), "--batch-sizes", "1", "--budget-s", "0.02",
                    "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["latency"][0]["p50_ms"] > 0
    assert list((tmp_path / "optkit-out" / "optkit-data").glob("texts-*-eval.npz"))
