"""--text-data: .txt/.jsonl/.csv read, tokenized with the folder's tokenizer, split and written once."""
from __future__ import annotations

import json

import numpy as np
import pytest

from optkit.eval.data import load_npz
from optkit.eval.text_data import prepare, read_texts
from optkit.types.errors import UsageError
from tests.hf_models import bert_folder, write_texts


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("hf") / "bert", head="sequence")


def test_the_three_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one text\n\nanother text\n")
    assert read_texts(tmp_path / "a.txt") == (["one text", "another text"], None)
    (tmp_path / "b.jsonl").write_text('{"text": "x", "label": 1}\n{"text": "y", "label": "class_2"}\n')
    assert read_texts(tmp_path / "b.jsonl") == (["x", "y"], [1, "class_2"])
    (tmp_path / "c.csv").write_text('text,label\n"hello, world",0\nbye,1\n')
    assert read_texts(tmp_path / "c.csv") == (["hello, world", "bye"], ["0", "1"])


@pytest.mark.parametrize("content, message", [('{"txt": "x"}\n', "no string 'text'"), ("not json\n", "not JSON"),
                                              ('{"text": "x", "label": 1}\n{"text": "y"}\n', "some rows have a label")])
def test_bad_jsonl_is_one_clear_line(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(UsageError, match=message):
        read_texts(tmp_path / "bad.jsonl")


def test_tokenized_splits_with_labels_by_name_or_id(bert, tmp_path):
    texts = write_texts(tmp_path / "t.jsonl", n=20, labels=True)
    made = prepare(texts, bert, tmp_path, input_names=None, label2id={"class_0": 0, "class_1": 1, "class_2": 2},
                   max_length=32, tokenizer_files=[bert / "tokenizer.json"])
    ev, cal = load_npz(made["eval"], None), load_npz(made["calib"], None)
    assert len(ev) == 10 and len(cal) == 10 and ev.labels is not None
    assert set(ev.inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    assert ev.inputs["input_ids"].dtype == np.int64 and ev.inputs["input_ids"].shape[1] <= 32
    rows = [json.loads(line) for line in texts.read_text().splitlines()]
    assert ev.labels.tolist() == [r["label"] for r in rows[:10]]
    again = prepare(texts, bert, tmp_path, input_names=None, label2id=None, max_length=32,
                    tokenizer_files=[bert / "tokenizer.json"])
    assert again["eval"] == made["eval"]  # same inputs: same file, reused
    fixed = prepare(texts, bert, tmp_path, input_names=None, label2id=None, max_length=32, seq_len=24,
                    tokenizer_files=[bert / "tokenizer.json"])
    assert load_npz(fixed["eval"], None).inputs["input_ids"].shape[1] == 24 and fixed["eval"] != made["eval"]


def test_an_unknown_label_name_is_refused(bert, tmp_path):
    (tmp_path / "t.jsonl").write_text('{"text": "x", "label": "spam"}\n')
    with pytest.raises(UsageError, match="label 'spam' is not a class id"):
        prepare(tmp_path / "t.jsonl", bert, tmp_path, input_names=None, label2id={"ham": 0}, max_length=16)


def test_timing_walks_batches_trimmed_to_their_longest_text():
    """Latency follows the real length distribution, not the padding of the file's longest text; a model with a
    fixed sequence length is timed on the padded batch."""
    from optkit.eval.data import EvalData
    from optkit.types.artifact import TensorSpec

    lengths = [3, 5, 2, 9, 4, 4, 1, 6]
    mask = np.array([[1] * n + [0] * (12 - n) for n in lengths], np.int64)
    data = EvalData({"input_ids": mask * 7, "attention_mask": mask}, None)
    dynamic = [[TensorSpec("input_ids", ("batch", "sequence"), "int64"),
                TensorSpec("attention_mask", ("batch", "sequence"), "int64")]]
    feeds = data.timing_feeds(2, dynamic)
    assert [f["input_ids"].shape for f in feeds] == [(2, 5), (2, 9), (2, 4), (2, 6)]
    assert all((f["attention_mask"][:, -1] == 1).any() for f in feeds)  # only padding was cut
    fixed = [[TensorSpec("input_ids", ("batch", 12), "int64"), TensorSpec("attention_mask", ("batch", 12), "int64")]]
    assert [f["input_ids"].shape for f in data.timing_feeds(2, fixed)] == [(2, 12)]
    images = EvalData({"x": np.zeros((4, 3), np.float32)}, None)
    assert len(images.timing_feeds(2, [[TensorSpec("x", ("batch", 3))]])) == 1
