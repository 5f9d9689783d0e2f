"""TorchSource: typed access to a torch model's parts, stored as exactly the dict earlier versions wrote."""
from __future__ import annotations

from pathlib import Path

import pytest

from optkit.types.artifact import Artifact
from optkit.types.records import StepRecord
from optkit.types.sidecar import write_sidecar_text
from optkit.types.source import TorchSource


def _old_json(source: dict) -> dict:
    """What engine/produce.py wrote as ``details.source`` before TorchSource: the keys that hold something."""
    return {k: v for k, v in source.items() if v}


OLD_SOURCES = {  # the dicts the backends built, one per kind, as torch_open.py / hf_folder.py wrote them
    "folder": {"kind": "factory", "factory": "/m/model.py:build", "factory_file": "/m/model.py",
               "weights": "/m/weights.pt", "name": "tiny", "spec": "/m/optkit.yaml", "structure": {}},
    "pruned": {"kind": "factory", "factory": "/p/model.py:build", "factory_file": "/p/model.py",
               "weights": "/p/weights.pt", "name": "tiny_pruned", "spec": "/p/optkit.yaml",
               "structure": {"conv": {"out_channels": 4}}},
    "reference": {"kind": "factory", "factory": "pkg.mod:build", "factory_file": None, "weights": None, "name": "build"},
    "torchscript": {"kind": "torchscript", "path": "/m/ts.pt", "name": "ts"},
    "hf": {"kind": "hf", "folder": "/hf/bert", "task": "text-classification", "name": "bert", "model_type": None,
           "trust_remote_code": False, "files": ["/hf/bert/config.json", "/hf/bert/model.safetensors"],
           "text_data": {"texts": 4, "labels": True, "digest": "ab", "max_length": 128, "seq_len": None,
                         "source": "/t.txt", "tokenizer": {"tokenizer.json": "cd"}, "eval": "/e.npz",
                         "calib": "/c.npz"}},
}


@pytest.mark.parametrize("name", sorted(OLD_SOURCES))
def test_written_as_the_old_dict(name):
    old = OLD_SOURCES[name]
    source = TorchSource.model_validate(old)
    assert source.to_json() == _old_json(old)
    assert TorchSource.model_validate(source.to_json()) == source  # read back from a sidecar, the same source


def test_a_later_versions_keys_survive():
    row = {"kind": "factory", "factory": "pkg.mod:build", "revision": "v2", "gguf": {"quant": "q4"}}
    source = TorchSource.model_validate(row)
    assert source.is_factory and source.factory_ref == "pkg.mod:build"
    assert source.to_json() == row


def test_recorded_in_an_original_row():
    record = StepRecord(step="original", artifact="/m", format="torch", sha256="0" * 64, size_bytes=1,
                        details={"source": _old_json(OLD_SOURCES["torchscript"])})
    assert TorchSource.recorded_in(record).file_path == Path("/m/ts.pt")
    assert TorchSource.recorded_in(record.model_copy(update={"details": {}})).kind is None


def test_digest_files_by_kind():
    assert TorchSource.model_validate(OLD_SOURCES["folder"]).digest_files() == [Path("/m/model.py"), Path("/m/weights.pt")]
    assert TorchSource.model_validate(OLD_SOURCES["pruned"]).digest_files()[-1] == Path("/p/optkit.yaml")
    assert TorchSource.model_validate(OLD_SOURCES["reference"]).digest_files() == []
    assert TorchSource.model_validate(OLD_SOURCES["hf"]).digest_files() == [Path(f) for f in OLD_SOURCES["hf"]["files"]]
    assert TorchSource.model_validate(OLD_SOURCES["torchscript"]).digest_files() is None  # the artifact's own file
    assert TorchSource().digest_files() is None


def test_a_missing_part_is_named():
    with pytest.raises(ValueError, match="hf model source without 'folder'"):
        _ = TorchSource(kind="hf").hf_folder
    with pytest.raises(ValueError, match="factory model source without 'factory'"):
        _ = TorchSource(kind="factory").factory_ref


def test_hf_predicates():
    hf = TorchSource.model_validate(OLD_SOURCES["hf"])
    assert hf.is_hf and not hf.is_factory and not hf.is_image_model and hf.hf_task == "text-classification"
    assert TorchSource(kind="hf", task="image-classification").is_image_model


def test_splits(tmp_path):
    art = Artifact(path=tmp_path / "m.onnx", format="onnx", data={"eval": tmp_path / "e.npz"})
    both = art.with_split("calib", tmp_path / "c.npz")
    assert art.calib_data is None and art.split("train") is None  # the handle itself never changes
    assert both.eval_data == tmp_path / "e.npz" and both.calib_data == tmp_path / "c.npz"
    assert both.with_split("eval", tmp_path / "f.npz").data == {"eval": tmp_path / "f.npz", "calib": tmp_path / "c.npz"}


def test_sidecar_data_as_before(tmp_path):
    art = Artifact(path=tmp_path / "m.onnx", format="onnx").with_split("eval", tmp_path / "d" / "e.npz")
    text = write_sidecar_text(art.with_split("calib", tmp_path / "c.npz"), tmp_path / "m.onnx")
    assert '"data": {\n    "calib": "c.npz",\n    "eval": "d/e.npz"\n  }' in text
