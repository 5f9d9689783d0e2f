"""File helpers: content digests and all-or-nothing writes.

A step never leaves a half-written artifact: everything it writes goes to temporary names in the
destination folder and is renamed into place only once every file is complete and verified.
"""
from __future__ import annotations

import contextlib
import contextvars
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
from typing import Any, Iterable, Iterator

from optkit.types.errors import UsageError

# Every temporary name optkit makes carries the writer's pid, so a later run can tell files left by a
# killed process (pid gone) from files a live one is still writing, and remove only the former.
_TEMP_RE = re.compile(r"^\.(?:.+\.(?:tmp|old)|optkit-scratch)-(?P<pid>\d+)-(?P<tag>[0-9a-z_]+)")
# which machine made a temporary name: in a cache folder shared by several machines (a Ray cluster), a pid is only
# checked on the machine it belongs to
_HOST = hashlib.sha256(platform.node().encode()).hexdigest()[:6]
BUILD_LOCK = ".optkit-build.lock"
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
        self._pending.append((tmp, final))
        return tmp

    def write_text(self, final: Path, text: str) -> None:
        self.path_for(final).write_text(text)

    def commit(self) -> None:
        for tmp, final in self._pending:
            if not tmp.exists():
                raise FileNotFoundError(f"staged file {tmp} was never written")
        for tmp, final in self._pending:
            if tmp.is_dir() and final.is_dir():  # a folder artifact replaces the previous one
                old = final.with_name(f".{final.name}.old-{_tag()}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        self._committed = True

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


def _tag() -> str:
    return f"{os.getpid()}-{_HOST}{uuid.uuid4().hex[:8]}"


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
    removed = []
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


# ----------------------------------------------------------------------------- where optkit may write

def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_path(path: str | Path, *, protected: Iterable[Path] = (), protected_dirs: Iterable[Path] = (),
                      folder_output: bool = False, what: str = "output", owned=None) -> Path:
    """Refuse, before any work, an output path optkit must not write: the empty path, a device or other
    special file, the input model's files (or anything already in its folder), a directory where a file
    goes (or a file where a folder goes), a file or folder optkit did not write (no sidecar beside it;
    ``owned(path)`` decides instead for outputs that have none), or a place that cannot be written.
    Returns the resolved path."""
    from optkit.types.artifact import sidecar_path

    if str(path).strip() == "":
        raise UsageError(f"the {what} path is empty", hint="Give a file name, e.g. -o model.onnx")
    raw = Path(path)
    final = raw.resolve()
    if any(final == Path(p).resolve() for p in protected) or any(
            _inside(final, Path(d).resolve()) and final.exists() for d in protected_dirs):
        raise UsageError(f"the {what} {raw} is a file of the input model; optkit never overwrites its input",
                         hint="Choose another output path")
    if raw.is_symlink() and not final.exists():
        raise UsageError(f"the {what} {raw} is a broken symbolic link", hint="Remove the link or choose another path")
    if final.exists():
        mode = os.stat(final).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise UsageError(f"the {what} {raw} is a device or special file, not a regular file",
                             hint="Choose a regular file path")
        if stat.S_ISDIR(mode) and not folder_output:
            raise UsageError(f"the {what} {raw} is an existing directory", hint="Give a file path inside it, e.g. -o DIR/model.onnx")
        if stat.S_ISREG(mode) and folder_output:
            raise UsageError(f"the {what} {raw} is an existing file, but this step writes a model folder",
                             hint="Choose a folder path that does not exist yet")
        if not (owned(final) if owned is not None else sidecar_path(final).is_file()):
            why = "" if owned is not None else f" (no {sidecar_path(final).name} beside it)"
            raise UsageError(f"the {what} {raw} exists and optkit did not write it{why}; optkit never overwrites "
                             "other files", hint="Delete or move it, or choose another output path")
    parent = final.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create the {what} {raw}: {parent} is a file, not a folder", hint="Choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the {what} {raw}: {parent} is not writable", hint="Choose a writable folder")
    return final


# ----------------------------------------------------------------------------- a run's output folder

RUN_MARKER = ".optkit-run"  # in every output_dir optkit created; a folder without it (or a manifest) is the user's


@contextlib.contextmanager
def run_output_dir(out_dir: Path, *, force: bool = False) -> Iterator[None]:
    """Hold ``out_dir`` for one ``optkit run``: refuse a non-empty folder of the user's (no marker, no
    manifest) unless ``force``; create it with the marker; lock it, so a second run into it exits 2
    naming the holder's pid. A folder this created is removed again if the run ends before writing
    anything into it (e.g. a bad input found after the check)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output_dir {out_dir} is a file, not a folder", hint="Set output_dir to a folder path")
    created = not out_dir.exists()
    if created:
        check_output_path(out_dir, folder_output=True, what="output_dir")
        out_dir.mkdir(parents=True)
    else:
        ours = (out_dir / RUN_MARKER).is_file() or (out_dir / "manifest.json").is_file()
        if not ours and any(out_dir.iterdir()) and not force:
            raise UsageError(f"output_dir {out_dir} already holds files optkit did not write",
                             hint="Choose an empty or new output_dir, or pass --force to write into it anyway")
        if not ours and not any(out_dir.iterdir()):
            created = True  # an empty folder becomes optkit's
    if created:
        (out_dir / RUN_MARKER).write_text("written by optkit: this folder holds optkit's outputs\n")
    try:
        with _locked(out_dir / ".optkit.lock", out_dir):
            yield
    except BaseException:
        if created and {p.name for p in out_dir.iterdir()} <= {RUN_MARKER, ".optkit.lock", BUILD_LOCK}:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


@contextlib.contextmanager
def _locked(path: Path, what: Path) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UsageError(f"another optkit run (pid {holder}) is writing to {what}",
                             hint="Wait for it to finish, or choose another output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Held while a step builds into ``folder``: a second builder (another worker of a cluster sharing the cache
    folder) waits, then finds the first one's result in the cache instead of writing the same files beside it."""
    import fcntl

    folder = Path(folder)
    created = [p for p in [folder, *folder.parents] if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / BUILD_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
        if created and [p.name for p in folder.iterdir()] == [BUILD_LOCK]:  # nothing was built: leave no folder
            with contextlib.suppress(OSError):
                (folder / BUILD_LOCK).unlink()
                for made in created:
                    made.rmdir()


def resolve_ref(base: Path, value: str | None) -> str | None:
    """A recipe path relative to the recipe's folder; ``pkg.module:fn`` references stay as they are."""
    if value is None:
        return None
    if value.startswith("hf:"):  # a Hugging Face model id, resolved through the hub's cache
        return value
    target, sep, attr = value.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{target if Path(target).is_absolute() else base / target}:{attr}"
    if sep and target and "/" not in target and not Path(value).exists():
        return value
    return value if Path(value).is_absolute() else str(base / value)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary folder for a step's intermediate files, inside the run's output folder when the engine set
    one (``scratch_root``), so a killed run's scratch is found and removed by the next run. The working
    directory is left alone (it is process-wide): every tool is given paths inside this folder."""
    with scratch_folder() as tmp:
        yield tmp
