from __future__ import annotations

import pytest

from optkit.core.files import Staging, sha256_file


def test_staging_commits_all_files_together(tmp_path):
    a, b = tmp_path / "new" / "a.onnx", tmp_path / "new" / "a.onnx.optkit.json"
    with Staging() as stage:
        stage.path_for(a).write_bytes(b"model")
        stage.write_text(b, "{}")
        assert not a.exists() and not b.exists()  # nothing visible before commit
        stage.commit()
    assert a.read_bytes() == b"model" and b.read_text() == "{}"
    assert sorted(p.name for p in a.parent.iterdir()) == ["a.onnx", "a.onnx.optkit.json"]


def test_staging_failure_leaves_nothing_not_even_created_folders(tmp_path):
    target = tmp_path / "deep" / "er" / "m.onnx"
    with pytest.raises(RuntimeError):
        with Staging() as stage:
            stage.path_for(target).write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_staging_keeps_existing_folder_and_replaces_atomically(tmp_path):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with Staging() as stage:
            stage.path_for(target).write_bytes(b"new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_commit_refuses_unwritten_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        with Staging() as stage:
            stage.path_for(tmp_path / "never.onnx")
            stage.commit()


def test_sha256(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
