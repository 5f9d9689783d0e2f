"""Hugging Face folders and text data end to end, as a user types it: export with --text-data, then quantize and
compile, then optimize; no factory file, no .npz. Tiny models built here (tests/hf_models.py), nothing downloaded."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

from tests.conftest import FAST, invoke, run_cli, sidecar
from tests.hf_models import bert_folder, sentence_folder, write_texts


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_cls")
    return bert_folder(root / "cls", head="sequence"), write_texts(root / "labelled.jsonl", n=40, labels=True)


@pytest.mark.slow
def test_export_quantize_compile_a_classifier_from_its_folder_and_jsonl(classifier, tmp_path):
    folder, texts = classifier
    out = tmp_path / "cls.onnx"
    result = invoke("export", str(folder), "--text-data", str(texts), "-o", str(out), "--json", *FAST)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["steps"]
    assert [r["accuracy"]["metric"] for r in rows] == ["top1", "top1"]  # labels from the .jsonl: top-1 ledger
    assert rows[1]["accuracy"]["samples"] == 20  # the first half evaluates
    onnx.checker.check_model(str(out), full_check=True)
    model = onnx.load(str(out))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    assert dims == {n: ["batch", "sequence"] for n in ("input_ids", "attention_mask", "token_type_ids")}
    meta = sidecar(out)
    source = meta["lineage"][0]["details"]["source"]
    assert source["kind"] == "hf" and source["task"] == "text-classification"
    assert set(source["text_data"]["tokenizer"]) >= {"tokenizer.json"} and source["text_data"]["labels"] is True
    assert sorted(meta["data"]) == ["calib", "eval"] and all(p.startswith("optkit-data/") for p in meta["data"].values())
    # ONNX Runtime on a batch of a length the export never saw: dynamic in batch and sequence
    sess = ort.InferenceSession(str(out))
    feed = {n: np.ones((3, 7), np.int64) for n in dims}
    assert sess.run(None, feed)[0].shape == (3, 3)

    q = tmp_path / "q.onnx"
    quant = invoke("quantize", str(out), "-o", str(q), "--mode", "dynamic", "--json", *FAST)
    assert quant.exit_code == 0, quant.output
    assert json.loads(quant.stdout)["steps"][-1]["accuracy"]["metric"] == "top1"
    compiled = invoke("compile", str(q), "-o", str(tmp_path / "c.onnx"), "--target", "ort-cpu", *FAST)
    assert compiled.exit_code == 0, compiled.output


@pytest.mark.slow
def test_optimize_a_folder_with_text_data_and_rebuild_the_winner(classifier, tmp_path):
    folder, texts = classifier
    out = tmp_path / "opt"
    result = invoke("optimize", str(folder), "--text-data", str(texts), "-o", str(out), "--targets", "ort-cpu",
                    "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["winner"] and report["judged_on"].startswith("the calibration split")
    assert report["facts"]["calibration_data"] is True  # the second half of the texts calibrates
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert recipe["model"] == str(folder) and recipe["text_data"] == str(texts)
    rebuilt = invoke("run", str(out / "best.yaml"), "--set", "measure.budget_s=0.05")
    assert rebuilt.exit_code == 0, rebuilt.output


@pytest.mark.slow
def test_a_sentence_encoder_exports_its_normalised_embedding(tmp_path):
    folder = sentence_folder(tmp_path / "st")
    texts = write_texts(tmp_path / "s.txt", n=16)
    out = tmp_path / "st.onnx"
    result = invoke("export", str(folder), "--text-data", str(texts), "--seq-len", "24", "-o", str(out), "--json",
                    *FAST)
    assert result.exit_code == 0, result.output
    data = np.load(tmp_path / sidecar(out)["data"]["eval"])
    assert data["input_ids"].shape == (8, 24)  # --seq-len: every text padded to exactly 24 tokens
    emb = ort.InferenceSession(str(out)).run(None, {k: data[k] for k in data.files})[0]
    assert emb.shape == (8, 32) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    rows = json.loads(result.stdout)["steps"]
    assert rows[1]["fidelity"]["cosine"] > 0.99999  # vs the original torch model
    st = pytest.importorskip("sentence_transformers")
    # the evaluation split is the first half of the file: the same texts through sentence-transformers itself
    reference = st.SentenceTransformer(str(folder), device="cpu").encode(
        texts.read_text().splitlines()[:8], convert_to_numpy=True)
    distance = 1.0 - np.sum(emb * reference, axis=1) / (
        np.linalg.norm(emb, axis=1) * np.linalg.norm(reference, axis=1))
    assert distance.max() < 1e-5, distance


@pytest.mark.slow
def test_a_recipe_takes_the_same_keys(classifier, tmp_path):
    folder, texts = classifier
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": str(folder), "task": "text-classification", "text_data": str(texts),
                                      "max_length": 32, "output_dir": "out", "measure": {"budget_s": 0.05},
                                      "steps": ["export"]}))
    proc = run_cli("run", str(recipe))  # a real process, as CI runs it
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list((tmp_path / "out" / "optkit-data").glob("labelled-*-eval.npz"))


@pytest.mark.parametrize("args, message", [
    (["--task", "summarization"], "--task summarization: not one of"),
    (["--text-data", "missing.txt"], "no such file"),
])
def test_bad_hf_options_are_one_line_exit_2(classifier, tmp_path, args, message):
    folder, _ = classifier
    proc = run_cli("export", str(folder), "-o", str(tmp_path / "x.onnx"), *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_text_data_on_a_model_that_is_not_a_text_model_is_refused(tiny, tmp_path):
    texts = write_texts(tmp_path / "t.txt", n=8)
    result = invoke("export", str(tiny["folder"]), "--text-data", str(texts), "-o", str(tmp_path / "x.onnx"))
    assert result.exit_code == 2 and "--text-data needs a Hugging Face text model" in result.output
