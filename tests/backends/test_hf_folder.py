"""Hugging Face folders are recognised from their files: task detection, weights, sentence-transformers modules,
remote code refused, hf: ids resolved from the local cache only (nothing is downloaded in tests)."""
from __future__ import annotations

import json

import pytest

from optkit.backends.opening import open_artifact
from optkit.types.errors import UsageError
from optkit.backends.hf_folder import detect_task, hf_source, resolve_hub, weight_files
from tests.hf_models import bert_folder, sentence_folder


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return bert_folder(tmp_path_factory.mktemp("hf") / "bert")


def test_a_saved_bert_is_a_torch_artifact_with_token_inputs(bert):
    art = open_artifact(bert)
    assert art.format == "torch" and art.source.kind == "hf" and art.source.task == "feature-extraction"
    assert [t.name for t in art.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(t.dtype == "int64" and t.shape == ("batch", "sequence") for t in art.inputs)
    assert [t.name for t in art.outputs] == ["last_hidden_state"] and art.task == "other"
    assert {p.name for p in art.files()} >= {"config.json", "model.safetensors"}


@pytest.mark.parametrize("arch, task", [("BertForSequenceClassification", "text-classification"),
                                        ("BertForTokenClassification", "token-classification"),
                                        ("ViTForImageClassification", "image-classification"),
                                        ("BertModel", "feature-extraction")])
def test_the_task_follows_the_architecture(tmp_path, arch, task):
    assert detect_task(tmp_path, {"architectures": [arch]}) == task


def test_a_sentence_transformers_folder_is_a_sentence_embedding(tmp_path):
    folder = sentence_folder(tmp_path / "st")
    source = hf_source(folder)
    assert source.task == "sentence-embedding"
    assert [m["type"] for m in source.modules] == ["Transformer", "Pooling", "Normalize"]
    assert any(f.endswith("1_Pooling/config.json") for f in source.files)


def test_an_unsupported_sentence_module_is_refused(tmp_path):
    folder = sentence_folder(tmp_path / "st")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UsageError, match="'Dense' is not supported"):
        hf_source(folder)


def test_remote_code_is_refused_unless_trusted(bert, tmp_path):
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(bert, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.Mine"}}))
    with pytest.raises(UsageError, match="ships its own model code") as exc:
        hf_source(folder)
    assert "--trust-remote-code" in exc.value.hint
    assert hf_source(folder, trust_remote_code=True).trust_remote_code is True


def test_a_folder_without_weights_says_so(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="no weights"):
        weight_files(tmp_path)


def test_an_unknown_task_is_refused(bert):
    with pytest.raises(UsageError, match="--task"):
        hf_source(bert, task="summarization")


def test_hf_ids_come_from_the_local_cache_offline(bert, tmp_path, monkeypatch):
    """The hub's cache layout (models--ORG--NAME/snapshots/REV, refs/main), filled by hand: resolved offline."""
    import shutil

    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-bert" / "snapshots" / ("a" * 40)
    shutil.copytree(bert, snap)
    (cache / "models--acme--tiny-bert" / "refs").mkdir(parents=True)
    (cache / "models--acme--tiny-bert" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_hub("hf:acme/tiny-bert") == snap
    art = open_artifact("hf:acme/tiny-bert")
    assert art.source.kind == "hf" and art.source.folder == str(snap.resolve())
    with pytest.raises(UsageError, match="cannot get hf:acme/missing") as exc:
        resolve_hub("hf:acme/missing")
    assert "local folder" in exc.value.hint
