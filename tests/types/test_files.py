from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from optkit.types.files import Staging, sha256_file


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


# ----------------------------------------------------------------------------- where optkit may write

def test_output_checks_refuse_what_optkit_did_not_write(tmp_path):
    from optkit.types.errors import UsageError
    from optkit.types.files import check_output_path

    weights = tmp_path / "model" / "weights.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"w")
    foreign = tmp_path / "notes.onnx"
    foreign.write_text("mine")
    ours = tmp_path / "ours.onnx"
    ours.write_bytes(b"m")
    (tmp_path / "ours.onnx.optkit.json").write_text("{}")
    cases = {"": "empty", "/dev/null": "device", str(weights): "input model", str(tmp_path): "existing directory",
             str(foreign): "did not write", str(foreign / "x.onnx"): "is a file", str(tmp_path / "model" / "new.onnx"): None,
             str(ours): None}
    for path, needle in cases.items():
        if needle is None:
            assert check_output_path(path, protected=[weights], protected_dirs=[weights.parent]) == Path(path).resolve()
            continue
        with pytest.raises(UsageError, match=needle):
            check_output_path(path, protected=[weights], protected_dirs=[weights.parent])
    assert weights.read_bytes() == b"w" and foreign.read_text() == "mine"


def test_unwritable_folder_is_refused_before_work(tmp_path, monkeypatch):
    from optkit.types.errors import UsageError
    from optkit.types.files import check_output_path

    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # as root, chmod cannot make a folder read-only
    with pytest.raises(UsageError, match="not writable"):
        check_output_path(tmp_path / "sub" / "m.onnx")


def test_staging_cleanup_never_hides_the_error(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"

    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    with pytest.raises(RuntimeError, match="the real error"):
        with Staging() as stage:
            stage.path_for(target).write_bytes(b"half")
            monkeypatch.setattr(Path, "unlink", refuse)  # a read-only folder: clean-up fails too
            raise RuntimeError("the real error")


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    from optkit.types.files import remove_stale_temp

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = [tmp_path / f".03_quantize.tmp-{dead_pid}-0a1b2c3d.onnx", tmp_path / f".optkit-scratch-{dead_pid}-0a1b2c3d-x"]
    stale[0].write_bytes(b"half")
    stale[1].mkdir()
    live = tmp_path / f".00_export.tmp-{os.getpid()}-0a1b2c3d.onnx"  # this process is still writing it
    live.write_bytes(b"in progress")
    user = tmp_path / ".hidden.tmp-notes"  # not an optkit name
    user.write_text("mine")
    assert sorted(p.name for p in remove_stale_temp(tmp_path)) == sorted(p.name for p in stale)
    assert live.exists() and user.exists() and not any(p.exists() for p in stale)


def test_run_output_dir_refuses_a_users_folder_and_locks(tmp_path):
    from optkit.types.errors import UsageError
    from optkit.types.files import RUN_MARKER, run_output_dir

    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="did not write") as refused:
        with run_output_dir(users):
            pass
    assert "--force" in refused.value.hint
    assert [p.name for p in users.iterdir()] == ["notes.txt"]
    with run_output_dir(users, force=True):  # forced: written into, but never claimed
        pass
    assert not (users / RUN_MARKER).exists()

    fresh = tmp_path / "fresh"
    with run_output_dir(fresh):
        assert (fresh / RUN_MARKER).is_file()
        other = subprocess.run(
            [sys.executable, "-c", "import sys; from optkit.types.files import run_output_dir\n"
             f"with run_output_dir({str(fresh)!r}): pass"], capture_output=True, text=True)
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    with pytest.raises(UsageError):  # a run that fails before writing anything takes its new folder away again
        with run_output_dir(tmp_path / "gone"):
            raise UsageError("bad model")
    assert not (tmp_path / "gone").exists()
