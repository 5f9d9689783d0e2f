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
    from optkit.backends.ownership import check_output_path

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
             str(ours): "did not write"}  # a '{}' beside it is not an optkit sidecar (types/artifact.optkit_wrote)
    for path, needle in cases.items():
        if needle is None:
            assert check_output_path(path, protected=[weights], protected_dirs=[weights.parent]) == Path(path).resolve()
            continue
        with pytest.raises(UsageError, match=needle):
            check_output_path(path, protected=[weights], protected_dirs=[weights.parent])
    assert weights.read_bytes() == b"w" and foreign.read_text() == "mine"


def test_unwritable_folder_is_refused_before_work(tmp_path, monkeypatch):
    from optkit.types.errors import UsageError
    from optkit.backends.ownership import check_output_path

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
    from optkit.types.runfolder import RUN_MARKER, run_output_dir

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
            [sys.executable, "-c", "import sys; from optkit.types.runfolder import run_output_dir\n"
             f"with run_output_dir({str(fresh)!r}): pass"], capture_output=True, text=True)
        assert other.returncode != 0 and f"pid {os.getpid()}" in other.stderr
    with pytest.raises(UsageError):  # a run that fails before writing anything takes its new folder away again
        with run_output_dir(tmp_path / "gone"):
            raise UsageError("bad model")
    assert not (tmp_path / "gone").exists()


# ----------------------------------------------------------------------------- no overwrite at commit

def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_commit_keeps_a_file_that_appeared_and_publishes_nothing(tmp_path):
    from optkit.types.errors import UsageError

    model, side = tmp_path / "m.onnx", tmp_path / "m.onnx.optkit.json"
    with pytest.raises(UsageError, match="appeared"):
        with Staging() as stage:
            stage.path_for(model).write_bytes(b"model")
            stage.write_text(side, "{}")
            model.write_bytes(b"the user's")  # another program, while optkit was writing
            stage.commit()
    assert model.read_bytes() == b"the user's" and _names(tmp_path) == ["m.onnx"]


def test_commit_keeps_optkits_previous_output_if_someone_replaced_it(tmp_path):
    from optkit.types.errors import UsageError

    model = tmp_path / "m.onnx"
    model.write_bytes(b"optkit's previous output")
    with pytest.raises(UsageError, match="changed or replaced"):
        with Staging() as stage:
            stage.path_for(model).write_bytes(b"new")
            (tmp_path / "swap").write_bytes(b"the user's")
            os.replace(tmp_path / "swap", model)
            stage.commit()
    assert model.read_bytes() == b"the user's" and _names(tmp_path) == ["m.onnx"]


def test_commit_keeps_a_folder_that_appeared(tmp_path):
    from optkit.types.errors import UsageError

    final = tmp_path / "pruned"
    with pytest.raises(UsageError, match="appeared"):
        with Staging() as stage:
            tmp = stage.path_for(final)
            tmp.mkdir()
            (tmp / "weights.pt").write_bytes(b"w")
            final.mkdir()  # empty: a plain rename(2) would have replaced it
            stage.commit()
    assert final.is_dir() and list(final.iterdir()) == [] and _names(tmp_path) == ["pruned"]


def test_what_the_output_check_saw_is_what_commit_expects(tmp_path):
    """The window runs from check_output_path (before any work), not only from staging."""
    from optkit.types.errors import UsageError
    from optkit.backends.ownership import check_output_path

    model = tmp_path / "m.onnx"
    check_output_path(model)  # nothing there yet
    model.write_bytes(b"made during an earlier step")
    with pytest.raises(UsageError, match="appeared"):
        with Staging() as stage:
            stage.path_for(model).write_bytes(b"model")
            stage.commit()
    assert model.read_bytes() == b"made during an earlier step"


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-fallback"])
def test_publish_new_never_replaces(tmp_path, monkeypatch, renameat2):
    from optkit.types import files

    if not renameat2:
        monkeypatch.setattr(files, "_rename_noreplace", lambda src, dst: False)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"new")
    dst.write_bytes(b"user")
    with pytest.raises(FileExistsError):
        files._publish_new(src, dst)
    assert dst.read_bytes() == b"user" and src.read_bytes() == b"new"
    dst.unlink()
    files._publish_new(src, dst)
    assert dst.read_bytes() == b"new" and not src.exists()


# ----------------------------------------------------------------------------- paths as the user wrote them

def test_expand_path(tmp_path, monkeypatch):
    from optkit.types.errors import UsageError
    from optkit.types.paths import expand_path

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("OPTKIT_T_OUT", "/data/out")
    monkeypatch.delenv("OPTKIT_T_UNSET", raising=False)
    assert expand_path("~/m.onnx", "-o") == f"{tmp_path}/m.onnx"
    assert expand_path("$OPTKIT_T_OUT/m.onnx", "-o") == "/data/out/m.onnx"
    assert expand_path("${OPTKIT_T_OUT}/m.onnx", "-o") == "/data/out/m.onnx"
    assert expand_path("price$.onnx", "-o") == "price$.onnx"  # no variable named: kept as written
    assert expand_path("a~b/m.onnx", "-o") == "a~b/m.onnx"
    for bad, needle in {"$OPTKIT_T_UNSET/m.onnx": "OPTKIT_T_UNSET", "${OPTKIT_T_UNSET}/x": "not set",
                        "~no_such_user_optkit/m.onnx": "no such user", "a\nb.onnx": r"control character \(\\n\)",
                        "a\x00b": "NUL byte", "a\x1b[31mb": "control character"}.items():
        with pytest.raises(UsageError, match=needle) as refused:
            expand_path(bad, "-o/--output")
        assert refused.value.message.startswith("-o/--output") and "\n" not in refused.value.one_line()


def test_link_loops_and_links_at_the_output_are_refused(tmp_path):
    from optkit.types.errors import UsageError
    from optkit.backends.ownership import check_output_path
    from optkit.types.paths import real_path

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    ours = tmp_path / "ours.onnx"
    ours.write_bytes(b"m")
    (tmp_path / "ours.onnx.optkit.json").write_text("{}")
    (tmp_path / "link.onnx").symlink_to(ours)
    for path in (tmp_path / "loop", tmp_path / "loop" / "m.onnx"):
        with pytest.raises(UsageError, match="link loop"):
            real_path(path, "-o")
        with pytest.raises(UsageError, match="link loop"):
            check_output_path(path)
    with pytest.raises(UsageError, match="symbolic link"):
        check_output_path(tmp_path / "link.onnx")
    assert ours.read_bytes() == b"m"


def test_a_folder_is_optkits_by_its_marker_or_a_true_manifest_only(tmp_path):
    import json

    from optkit.types.runfolder import RUN_MARKER, written_by_optkit

    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "report.md").write_text("report\n")
    manifest = folder / "manifest.json"
    true = {"optkit_manifest": 1, "recipe": "r.yaml", "recipe_sha256": "0", "versions": {},
            "files": {"report.md": {"sha256": sha256_file(folder / "report.md"), "bytes": 7}}}
    legacy = {k: v for k, v in true.items() if k != "optkit_manifest"}
    cases = [
        ('{"name": "my own manifest", "files": ["report.md"]}', False),
        ("not json", False),
        (json.dumps({**true, "files": {}}), False),
        (json.dumps({**true, "files": {"report.md": {"sha256": "0" * 64}}}), False),  # the user edited it
        (json.dumps({**true, "files": {"gone.onnx": {"sha256": "0" * 64}}}), False),
        (json.dumps({**true, "files": {"../outside": {"sha256": "0"}}}), False),
        (json.dumps({"optkit_manifest": 0, **{k: v for k, v in legacy.items() if k != "recipe"}}), False),
        (json.dumps(true), True),
        (json.dumps(legacy), True),  # written before optkit_manifest existed
    ]
    for text, expected in cases:
        manifest.write_text(text)
        assert written_by_optkit(folder) is expected, text
    manifest.write_text("not json")
    (folder / RUN_MARKER).write_text("written by optkit\n")
    assert written_by_optkit(folder)
