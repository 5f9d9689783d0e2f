"""Hugging Face models as modules: the task's head and outputs, sentence-transformers pooling exactly as the
folder defines it, .bin weights only through torch.load(weights_only=True)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from optkit.backends.torch import load_module
from optkit.backends.opening import open_artifact
from optkit.types.errors import UsageError
from tests.hf_models import bert_folder, sentence_folder, sentences


def _tokens(folder, texts):
    from transformers import AutoTokenizer

    enc = AutoTokenizer.from_pretrained(str(folder))(texts, padding=True, return_tensors="pt")
    return [enc[n] for n in ("input_ids", "attention_mask", "token_type_ids")]


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_the_sentence_embedding_is_what_sentence_transformers_encodes(tmp_path, pooling):
    st = pytest.importorskip("sentence_transformers")
    folder = sentence_folder(tmp_path / "st", pooling=pooling)
    texts = sentences(12, seed=5)
    with torch.no_grad():
        ours = load_module(open_artifact(folder))(*_tokens(folder, texts)).numpy()
    theirs = st.SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    assert ours.shape == theirs.shape == (12, 32) and float((1 - cos).max()) < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # Normalize applied


@pytest.mark.parametrize("head, task, shape", [(None, "feature-extraction", (3, None, 32)),
                                               ("sequence", "text-classification", (3, 3)),
                                               ("token", "token-classification", (3, None, 3))])
def test_each_head_exports_its_task_output(tmp_path, head, task, shape):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification

    folder = bert_folder(tmp_path / "m", head=head)
    art = open_artifact(folder)
    assert art.source.task == task and art.task == ("classification" if head == "sequence" else "other")
    tokens = _tokens(folder, sentences(3))
    with torch.no_grad():
        ours = load_module(art)(*tokens)
        cls = {None: AutoModel, "sequence": AutoModelForSequenceClassification,
               "token": AutoModelForTokenClassification}[head]
        ref = cls.from_pretrained(str(folder)).eval()(*tokens[:2], token_type_ids=tokens[2])
    expected = ref.last_hidden_state if head is None else ref.logits
    assert ours.shape[0] == shape[0] and ours.shape[-1] == shape[-1] and torch.allclose(ours, expected, atol=1e-6)


def test_bin_weights_load_only_as_tensors(tmp_path):
    from safetensors.torch import load_file

    folder = bert_folder(tmp_path / "b", head="sequence")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    art = open_artifact(folder)
    assert [p.name for p in art.files()] == ["config.json", "pytorch_model.bin"]
    with torch.no_grad():
        assert load_module(art)(*_tokens(folder, sentences(2))).shape == (2, 3)

    from fractions import Fraction  # a Python object, not a tensor: refused by weights_only=True, never unpickled

    torch.save({"x": Fraction(1, 2)}, folder / "pytorch_model.bin")
    with pytest.raises(UsageError, match="weights_only=True|full pickle"):
        load_module(open_artifact(folder))


def test_a_tokenizer_without_token_type_ids_feeds_zeros(tmp_path):
    """A tokenizer whose model_input_names leave out token_type_ids (while the model takes them) is not refused:
    the data gets zeros, which is what the model uses when it is not given them."""
    import json

    from optkit.eval.text_data import prepare
    from tests.hf_models import write_texts

    folder = bert_folder(tmp_path / "m", head="sequence")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_input_names": ["input_ids", "attention_mask"]}))
    art = open_artifact(folder)
    names = [t.name for t in art.inputs]
    assert names == ["input_ids", "attention_mask", "token_type_ids"]
    made = prepare(write_texts(tmp_path / "t.txt", n=12), folder, tmp_path, input_names=names, label2id=None,
                   max_length=32)
    with np.load(made["eval"]) as ev:
        assert set(ev.files) == set(names) and not ev["token_type_ids"].any()
        assert ev["token_type_ids"].shape == ev["input_ids"].shape and ev["token_type_ids"].dtype == np.int64
        feed = [torch.from_numpy(ev[n]) for n in names]
    from transformers import AutoModelForSequenceClassification

    with torch.no_grad():
        ours = load_module(art)(*feed)
        theirs = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()(*feed[:2]).logits  # no types
    assert torch.allclose(ours, theirs, atol=1e-6)
