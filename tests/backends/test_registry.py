"""The backend registry: every descriptor loads under its format, recognises only its own files, lists the files
a digest covers, and the compile step's targets are each built by the backend of its output format."""
from __future__ import annotations

from pathlib import Path

import pytest

from optkit.backends import BACKENDS, Backend, all_backends, backend
from optkit.backends.opening import open_artifact
from optkit.backends.ownership import recorded_files
from optkit.steps.compile import TARGETS
from optkit.types.errors import UsageError


def test_every_registered_backend_is_the_descriptor_of_its_format():
    for fmt, found in zip(BACKENDS, all_backends()):
        assert isinstance(found, Backend) and found.format == fmt == found.runner.format


def test_every_compile_target_is_built_by_its_output_formats_backend():
    for target, (fmt, _suffix, _precisions) in TARGETS.items():
        assert target in backend(fmt).compile_targets


def test_an_unknown_format_names_the_known_ones():
    with pytest.raises(UsageError, match="no backend can run 'nope'") as refused:
        backend("nope")
    assert "Known formats: torch, onnx, openvino, tensorrt, tflite" in refused.value.hint


def test_files_of_an_ir_are_its_xml_and_bin(tmp_path: Path):
    xml = tmp_path / "m.xml"
    assert recorded_files(xml, "openvino") == [xml, tmp_path / "m.bin"]
    assert recorded_files(tmp_path / "m.onnx", "onnx") == [tmp_path / "m.onnx"]
    assert recorded_files(tmp_path, "torch") is None  # a folder without optkit.yaml: not known


def test_a_registered_backend_opens_its_own_files(tmp_path: Path, monkeypatch):
    from optkit.types.artifact import Artifact

    def open_mine(path: Path) -> Artifact:
        return Artifact(path=path, format="mine", companions=(".weights",))

    mine = Backend(format="mine", runner=backend("onnx").runner, recognises=lambda p: p.suffix == ".mine",
                   open=open_mine, companions=(".weights",))
    monkeypatch.setattr("tests.backends.test_registry.MINE", mine, raising=False)
    monkeypatch.setitem(BACKENDS, "mine", "tests.backends.test_registry:MINE")
    model = tmp_path / "m.mine"
    model.write_bytes(b"x")
    (tmp_path / "m.weights").write_bytes(b"w")
    art = open_artifact(model)
    assert art.format == "mine" and art.files() == [model, tmp_path / "m.weights"]
    (tmp_path / "empty.mine").write_bytes(b"")
    with pytest.raises(UsageError, match="is empty"):
        open_artifact(tmp_path / "empty.mine")
    (tmp_path / "other.txt").write_text("not a model")
    with pytest.raises(UsageError, match="not a model optkit can read"):
        open_artifact(tmp_path / "other.txt")
