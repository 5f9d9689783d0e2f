"""File helpers: content digests, all-or-nothing writes, temporary and scratch names.

A step never leaves a half-written artifact: everything it writes goes to temporary names in the
destination folder and is renamed into place only once every file is complete and verified. Checking
an output path before the work is ``types/paths.py``; a run's output folder, ``types/runfolder.py``.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import json
import os
import platform
import re
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

from optkit.types.errors import UsageError

# Every temporary name optkit makes carries the writer's pid, so a later run can tell files left by a
# killed process (pid gone) from files a live one is still writing, and remove only the former.
_TEMP_RE = re.compile(r"^\.(?:.+\.(?:tmp|old)|optkit-scratch)-(?P<pid>\d+)-(?P<tag>[0-9a-z_]+)")
# which machine made a temporary name: in a cache folder shared by several machines (a Ray cluster), a pid is only
# checked on the machine it belongs to
_HOST = hashlib.sha256(platform.node().encode()).hexdigest()[:6]
_SCRATCH_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("optkit_scratch_root", default=None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One digest over several files (suffix and content of each, in the given order).

    Not the full name: an artifact is digested while staged under a temporary name and must keep
    the same digest once renamed (an OpenVINO .xml/.bin pair)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.suffix.encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def human_bytes(nbytes: float) -> str:
    """``nbytes`` in the largest binary unit it reaches: '8.0 GiB', '37.5 MiB', '512 bytes'."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{int(nbytes)} bytes"


def files_digest(files: list[Path]) -> str:
    """The sha256 a record keeps for an artifact's files: the file's own for one file, else over all of them."""
    return sha256_file(files[0]) if len(files) == 1 else sha256_files(files)


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


class Staging:
    """Stage several output files, then publish them together or not at all.

    >>> with Staging() as stage:
    ...     tmp = stage.path_for(Path("out/model.onnx"))   # write to tmp
    ...     stage.commit()                                   # renames every staged file into place

    Leaving the block without ``commit()`` (an error, Ctrl-C) deletes the temporary files and any
    folder the staging created.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._created_dirs: list[Path] = []
        self._expected: dict[Path, _FileState | None] = {}  # final -> what stood there when it was checked (None: nothing)
        self._committed = False

    def __enter__(self) -> "Staging":
        return self

    def _ensure_dir(self, folder: Path) -> None:
        missing = []
        for parent in [folder, *folder.parents]:
            if parent.exists():
                break
            missing.append(parent)
        folder.mkdir(parents=True, exist_ok=True)
        self._created_dirs.extend(missing)  # deepest first

    def path_for(self, final: Path, like: Path | None = None) -> Path:
        """A temporary name for ``final``; ``like``: reuse that staged file's stem (e.g. an IR's .bin next to its .xml)."""
        final = Path(final)
        self._ensure_dir(final.parent)
        if like is not None:
            tmp = like.with_suffix(final.suffix)
        else:
            tmp = final.with_name(f".{final.stem}.tmp-{_tag()}{final.suffix}")
        key = _key(final)
        self._expected[final] = _CHECKED.pop(key) if key in _CHECKED else _state(final)
        self._pending.append((tmp, final))
        return tmp

    def write_text(self, final: Path, text: str) -> None:
        self.path_for(final).write_text(text)

    def commit(self) -> None:
        """Publish every staged file. A final path must still be as it was when checked (``check_output_path``) or
        staged: a file that appeared there meanwhile, or optkit's own previous output changed by someone else, is
        left as it is and the commit fails (UsageError) before anything is published. A new name is published
        without ever replacing one that appears at the last moment (rename with RENAME_NOREPLACE, or a hard link)."""
        for tmp, final in self._pending:
            if not tmp.exists():
                raise FileNotFoundError(f"staged file {tmp} was never written")
        for _, final in self._pending:
            self._still_as_checked(final)
        published: list[Path] = []
        try:
            for tmp, final in self._pending:
                if self._expected[final] is None:
                    _publish_new(tmp, final)
                    published.append(final)
                    continue
                self._still_as_checked(final)  # right before replacing it
                if tmp.is_dir() and final.is_dir():  # a folder artifact replaces the previous one
                    old = final.with_name(f".{final.name}.old-{_tag()}")
                    os.replace(final, old)
                    os.replace(tmp, final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    os.replace(tmp, final)
        except (FileExistsError, UsageError) as exc:
            for made in published:  # only names this commit created: the folder is left as it was
                with contextlib.suppress(OSError):
                    if made.is_dir() and not made.is_symlink():
                        shutil.rmtree(made)
                    else:
                        made.unlink()
            raise (_appeared(final) if isinstance(exc, FileExistsError) else exc) from None
        self._committed = True

    def _still_as_checked(self, final: Path) -> None:
        expected, now = self._expected[final], _state(final)
        if now == expected:
            return
        if expected is None:
            raise _appeared(final)
        raise UsageError(f"{final} was changed or replaced by another program while optkit was writing it; "
                         "optkit left it as it is and wrote nothing",
                         hint="Check the file, then run again (or choose another output path)")

    def __exit__(self, *exc_info: object) -> None:
        if self._committed:
            return
        for tmp, _ in self._pending:  # clean-up must never replace the error that brought us here
            with contextlib.suppress(OSError):
                if tmp.is_dir():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
        for folder in self._created_dirs:
            with contextlib.suppress(OSError):
                folder.rmdir()


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as ``path``'s JSON, written whole or not at all (one staged file)."""
    with Staging() as stage:
        stage.write_text(path, dumps_json(obj))
        stage.commit()


def _tag() -> str:
    return f"{os.getpid()}-{_HOST}{uuid.uuid4().hex[:8]}"


_FileState = tuple[int, ...]  # what stands at a path: its type, device, inode (and for a file, size and times)
# What each output path held when ``check_output_path`` accepted it (None: nothing), taken by the ``Staging`` that
# writes it, so a file that appears there during the run (or a change to optkit's own previous output) is seen at
# commit instead of replaced.
_CHECKED: dict[str, _FileState | None] = {}


def _key(path: Path) -> str:
    return os.path.abspath(path)


def remember_checked(final: Path) -> None:
    """Note what stands at ``final`` now (an output path just checked): the ``Staging`` that writes it refuses to
    publish over anything else found there at commit."""
    _CHECKED[_key(final)] = _state(final)


def _state(path: Path) -> _FileState | None:
    """What stands at ``path`` (not following a link): None when nothing; a file by its inode, size and times; a
    folder (a model folder optkit wrote) by its inode only, as importing its model.py adds __pycache__ to it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return (stat.S_IFDIR, st.st_dev, st.st_ino)
    return (stat.S_IFMT(st.st_mode), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _appeared(final: Path) -> UsageError:
    return UsageError(f"{final} appeared while optkit was writing it (another program made it); optkit left it as "
                      "it is and wrote nothing", hint="Move it away and run again, or choose another output path")


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _rename_noreplace(src: Path, dst: Path) -> bool:
    """rename(2) that fails with FileExistsError when ``dst`` exists (Linux renameat2); False where unsupported."""
    if not hasattr(_rename_noreplace, "fn"):
        fn = None
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).renameat2
        _rename_noreplace.fn = fn  # type: ignore[attr-defined]
    fn = _rename_noreplace.fn  # type: ignore[attr-defined]
    if fn is None:
        return False
    import ctypes

    if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EEXIST:
        raise FileExistsError(err, os.strerror(err), str(dst))
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):  # this file system cannot
        return False
    raise OSError(err, os.strerror(err), str(dst))


def _publish_new(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final``, which must not exist: never replaces a file that appeared there."""
    if _rename_noreplace(tmp, final):
        return
    if not tmp.is_dir():
        try:
            os.link(tmp, final)  # fails with FileExistsError if final is there
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: the last check is as close as it gets
            if os.path.lexists(final):
                raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
            os.rename(tmp, final)
            return
        os.unlink(tmp)
        return
    if os.path.lexists(final):
        raise FileExistsError(errno.EEXIST, "exists", str(final))
    os.rename(tmp, final)  # a folder: rename(2) refuses a non-empty folder or a file in the way


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temp(folder: Path) -> list[Path]:
    """Remove temporary files and scratch folders a killed optkit process left in ``folder``."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or int(m["pid"]) == os.getpid() or _alive(int(m["pid"])):
            continue
        if len(m["tag"]) >= 14 and not m["tag"].startswith(_HOST):  # another machine's: its pid means nothing here
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def scratch_root(folder: Path | None) -> Iterator[None]:
    """Scratch folders made while this is active go inside ``folder`` (a run's output folder), where a
    later run removes them if this process is killed, instead of piling up in $TMPDIR."""
    token = _SCRATCH_ROOT.set(Path(folder) if folder is not None else None)
    try:
        yield
    finally:
        _SCRATCH_ROOT.reset(token)


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A temporary folder, removed on exit: inside the active ``scratch_root`` when one is set."""
    root = _SCRATCH_ROOT.get()
    if root is not None and root.is_dir():
        with tempfile.TemporaryDirectory(prefix=f".optkit-scratch-{_tag()}-", dir=root) as tmp:
            yield Path(tmp)
    else:
        with tempfile.TemporaryDirectory(prefix=f"optkit-{os.getpid()}-") as tmp:
            yield Path(tmp)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary folder for a step's intermediate files, inside the run's output folder when the engine set
    one (``scratch_root``), so a killed run's scratch is found and removed by the next run. The working
    directory is left alone (it is process-wide): every tool is given paths inside this folder."""
    with scratch_folder() as tmp:
        yield tmp
