"""Hugging Face image classifiers with --image-data, as a user types it: a folder of class sub-folders preprocessed
by the model's own image processor gives top-1 in the ledger, through export and quantize; a tiny ViT built here."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import FAST, invoke, run_cli, sidecar
from tests.hf_models import COLOURS, vit_folder, write_images


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_vit")
    return vit_folder(root / "vit"), write_images(root / "images")


@pytest.mark.slow
def test_export_then_quantize_an_image_classifier_with_an_image_folder(vit, tmp_path):
    folder, images = vit
    out = tmp_path / "vit.onnx"
    result = invoke("export", str(folder), "--image-data", str(images), "-o", str(out), "--json", *FAST)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["steps"]
    assert [r["accuracy"]["metric"] for r in rows] == ["top1", "top1"]  # labels from the sub-folder names
    assert rows[1]["accuracy"]["samples"] == 9 and rows[1]["fidelity"]["cosine"] > 0.9999
    meta = sidecar(out)
    record = meta["lineage"][0]["details"]["source"]["image_data"]
    assert record["images"] == 3 * 6 and record["labels"] and "preprocessor_config.json" in record["processor"]
    data = np.load(tmp_path / meta["data"]["eval"])
    # the processor resized 40x48 to 32x32 and normalised to [-1, 1]; labels follow the sub-folder names
    assert data["pixel_values"].shape == (9, 3, 32, 32) and data["pixel_values"].min() >= -1.0
    assert set(data["labels"]) <= set(range(len(COLOURS)))
    logits = ort.InferenceSession(str(out)).run(None, {"pixel_values": data["pixel_values"]})[0]
    assert logits.shape == (9, len(COLOURS))
    q = tmp_path / "vit_int8.onnx"
    result = invoke("quantize", str(out), "--mode", "dynamic", "-o", str(q), "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"][-1]["accuracy"]["metric"] == "top1"


@pytest.mark.slow
def test_an_image_folder_without_sub_folders_has_no_labels(vit, tmp_path):
    folder, _ = vit
    flat = write_images(tmp_path / "flat", per_class=3, labels=False)
    out = tmp_path / "vit.onnx"
    result = invoke("export", str(folder), "--image-data", str(flat), "-o", str(out), "--json", *FAST)
    assert result.exit_code == 0, result.output
    assert not sidecar(out)["lineage"][0]["details"]["source"]["image_data"]["labels"]


def test_image_data_on_a_text_model_is_one_line_exit_2(tmp_path):
    from tests.hf_models import bert_folder

    folder = bert_folder(tmp_path / "bert", head="sequence")
    images = write_images(tmp_path / "images", per_class=2)
    proc = run_cli("export", str(folder), "--image-data", str(images), "-o", str(tmp_path / "x.onnx"), cwd=tmp_path)
    assert proc.returncode == 2 and "--image-data needs a Hugging Face image classifier" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.onnx").exists()
