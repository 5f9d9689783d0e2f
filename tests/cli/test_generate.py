"""``optkit generate``: a causal LM folder's greedy continuation streamed to stdout, exactly transformers' own; the
chat template with --chat; a model that does not generate text exits 2 with one line."""
from __future__ import annotations

import pytest

from tests.conftest import invoke, run_cli
from tests.hf_models import llama_folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return llama_folder(tmp_path_factory.mktemp("hf") / "llama")


@pytest.fixture(scope="module")
def hf(llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(llama), AutoModelForCausalLM.from_pretrained(llama).eval()


def _greedy_text(hf, ids, new_tokens: int) -> str:
    import torch

    tok, model = hf
    ids = torch.tensor([ids])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens)
    return tok.decode(out[0, ids.shape[1]:].tolist(), skip_special_tokens=True)


@pytest.mark.slow  # a subprocess importing torch and transformers: ~10 s on two busy cores
def test_generate_prints_exactly_transformers_greedy_continuation(llama, hf):
    prompt = "the model builds"
    want = _greedy_text(hf, hf[0](prompt)["input_ids"], 20)
    proc = run_cli("generate", str(llama), "--prompt", prompt, "--max-new-tokens", "20")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want + "\n" and want.strip()


def test_chat_applies_the_folders_chat_template(llama, hf):
    tok = hf[0]
    rendered = tok.apply_chat_template([{"role": "user", "content": "fix every test"}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered.endswith("<|assistant|>")
    want = _greedy_text(hf, tok(rendered, add_special_tokens=False)["input_ids"], 12)
    result = invoke("generate", str(llama), "--prompt", "fix every test", "--chat", "--max-new-tokens", "12")
    assert result.exit_code == 0, result.output
    assert result.stdout == want + "\n"


def test_a_model_that_does_not_generate_text_exits_2(tiny, llama):
    result = invoke("generate", str(tiny["folder"]), "--prompt", "hello")
    assert result.exit_code == 2 and "causal" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    bad = invoke("generate", str(llama), "--prompt", "hello", "--temperature", "1", "--top-p", "0")
    assert bad.exit_code == 2 and "--top-p" in bad.stderr
