"""Generative measurements on a tiny Llama-style model: the token stream (greedy and sampled), perplexity, token
agreement, the tokenizer of an artifact's original, and per-token timing."""
from __future__ import annotations

import numpy as np
import pytest

from optkit.backends.generative import greedy, open_causal_lm
from optkit.backends.opening import open_artifact
from optkit.eval.generation import (decode_stream, generate_stream, generation_quality, perplexity, prompt_ids,
                                    read_eval_texts, stop_tokens, time_generation, token_agreement, tokenizer_for,
                                    windows_of)
from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError
from optkit.types.generative import GenerationQuality
from optkit.types.records import StepRecord
from tests.hf_models import llama_folder


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return llama_folder(tmp_path_factory.mktemp("hf") / "llama")


@pytest.fixture(scope="module")
def art(llama):
    return open_artifact(llama)


@pytest.fixture(scope="module")
def lm(art):
    with open_causal_lm(art) as model:
        yield model


@pytest.fixture(scope="module")
def tok(art):
    return tokenizer_for(art)


def test_the_greedy_stream_is_greedy_and_stops_at_eos(lm, tok, art):
    ids = prompt_ids(tok, "the cat runs")
    assert list(generate_stream(lm, ids, 16)) == greedy(lm, ids, 16)
    stop = stop_tokens(art, tok)
    assert stop == (1,)
    first = greedy(lm, ids, 1)[0]
    assert list(generate_stream(lm, ids, 16, stop=(first,))) == [first]
    assert list(generate_stream(lm, ids, 0)) == []


def test_sampling_is_seeded_and_a_tiny_top_p_is_greedy(lm, tok):
    ids = prompt_ids(tok, "a dog likes")
    one = list(generate_stream(lm, ids, 12, temperature=1.0, seed=3))
    assert one == list(generate_stream(lm, ids, 12, temperature=1.0, seed=3))
    assert list(generate_stream(lm, ids, 12, temperature=5.0, seed=4)) != one
    assert list(generate_stream(lm, ids, 12, temperature=1.0, top_p=1e-6, seed=5)) == greedy(lm, ids, 12)
    for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(UsageError):
            list(generate_stream(lm, ids, 4, **bad))


def test_perplexity_is_lower_on_the_models_own_greedy_text_than_shuffled(lm, tok):
    ids = prompt_ids(tok, "our team")
    own = np.concatenate([ids[0], greedy(lm, ids, 48)])
    shuffled = np.random.default_rng(0).permutation(own)
    mine, other = perplexity(lm, [own]), perplexity(lm, [shuffled])
    assert mine.tokens == other.tokens == len(own) - 1 and mine.windows == 1
    assert 1.0 <= mine.perplexity < other.perplexity
    assert mine.perplexity == pytest.approx(np.exp(mine.nll))
    with pytest.raises(UsageError, match="shorter than 2"):
        perplexity(lm, [[5]])


def test_agreement_is_one_with_itself_and_counts_the_common_prefix(lm, tok, art):
    prompts = [prompt_ids(tok, t) for t in ("the cat runs", "my friend reads")]
    windows = windows_of(tok("the model builds fast code and the server ships old files")["input_ids"], 6)
    quality, ref = generation_quality(lm, windows, prompts, 10, stop=stop_tokens(art, tok))
    again, got = generation_quality(lm, windows, prompts, 10, reference=ref)
    assert isinstance(quality, GenerationQuality) and got == ref
    assert quality.token_agreement == again.token_agreement == 1.0 and quality.prompts == 2
    assert again.ppl_increase_of(quality) == pytest.approx(0.0)
    assert token_agreement([[1, 2, 3, 4], [5, 6]], [[1, 2, 9, 4], [5, 6]]) == pytest.approx(4 / 6)
    assert token_agreement([[1, 2, 3]], [[1]]) == pytest.approx(1 / 3)
    assert [len(w) for w in windows_of(list(range(10)), 4)] == [4, 4]


def test_the_decoded_stream_joins_to_the_whole_text(lm, tok):
    tokens = greedy(lm, prompt_ids(tok, "the server"), 30)
    pieces = list(decode_stream(tok, iter(tokens)))
    assert "".join(pieces) == tok.decode(tokens, skip_special_tokens=True) and len(pieces) > 1


def test_an_export_finds_its_originals_tokenizer_and_a_non_lm_is_refused(art, llama, tiny, tmp_path):
    record = StepRecord(step="original", artifact=str(llama), format="torch", sha256="0" * 64, size_bytes=1,
                        details={"source": art.source.to_json()})
    child = Artifact(path=tmp_path / "model.onnx", format="onnx", lineage=[record])
    assert tokenizer_for(child).chat_template and stop_tokens(child) == (1,)
    with pytest.raises(UsageError, match="causal"):
        tokenizer_for(open_artifact(tiny["folder"]))
    tok = tokenizer_for(art)
    chat = prompt_ids(tok, "hello", chat=True)
    assert tok.decode(chat[0]).startswith("<|user|>") and tok.decode(chat[0]).endswith("<|assistant|>")


def test_timing_gives_sane_figures_for_interleaved_models(art, lm):
    with open_causal_lm(art) as second:
        timings = time_generation([lm, second], prompt_lengths=(8, 32), new_tokens=4, budget_s=0.15)
    assert len(timings) == 2 and all(len(t) == 2 for t in timings)
    for per_model in timings:
        assert [t.prompt_tokens for t in per_model] == [8, 32]
        for t in per_model:
            assert t.runs >= 3 and t.new_tokens == 4 and t.threads == 1
            assert 0 < t.ttft_ms <= t.ttft_p90_ms < 5_000
            assert 0 < t.decode_tokens_per_s < 1e6
            assert 0.2 < t.decode_tokens_per_s * t.decode_ms_per_token / 1e3 < 5


def test_eval_texts_are_read_by_text_data(tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    assert read_eval_texts(tmp_path / "t.jsonl") == ["one", "two"]
