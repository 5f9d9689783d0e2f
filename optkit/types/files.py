"""File helpers: content digests and all-or-nothing writes.

A step never leaves a half-written artifact: everything it writes goes to temporary names in the
destination folder and is renamed into place only once every file is complete and verified.
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
        self._expected: dict[Path, tuple | None] = {}  # final -> what stood there when it was checked (None: nothing)
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


# What each output path held when ``check_output_path`` accepted it (None: nothing), taken by the ``Staging`` that
# writes it, so a file that appears there during the run (or a change to optkit's own previous output) is seen at
# commit instead of replaced.
_CHECKED: dict[str, tuple | None] = {}


def _key(path: Path) -> str:
    return os.path.abspath(path)


def _state(path: Path) -> tuple | None:
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


# ----------------------------------------------------------------------------- paths as the user wrote them

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<name>\w+))")
PATH_RULES = "optkit expands ~ and $VAR in paths, in recipes and options alike"


def _shown(text: str) -> str:
    """``text`` with control characters written as escapes: an error stays one readable line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def check_path_text(value: str | os.PathLike, what: str) -> str:
    """Refuse a path no one could type or see: a NUL byte (the OS cannot even look it up) or another control
    character (a newline in a file name). ``what`` names the option or recipe key."""
    text = os.fspath(value)
    bad = _CONTROL.search(text)
    if bad:
        kind = "a NUL byte" if bad.group() == "\0" else f"a control character ({_shown(bad.group())})"
        raise UsageError(f"{what}: the path '{_shown(text)}' contains {kind}",
                         hint="Give a path of printable characters")
    return text


def expand_path(value: str | os.PathLike, what: str) -> str:
    """A path as the user meant it: ``~`` and ``$VAR`` / ``${VAR}`` expanded, in a recipe and in a (quoted) option
    alike. An unset variable or an unknown ``~user`` is refused instead of becoming a folder literally named so."""
    text = check_path_text(value, what)
    for m in _VAR.finditer(text):
        name = m["braced"] if m["braced"] is not None else m["name"]
        if name not in os.environ:
            raise UsageError(f"{what}: the path '{text}' names the environment variable ${name}, which is not set",
                             hint=f"Set {name}, or write the path out ({PATH_RULES})")
    expanded = os.path.expanduser(text) if text.startswith("~") else text
    if expanded.startswith("~"):
        user = expanded[1:].split("/", 1)[0]
        raise UsageError(f"{what}: the path '{text}' starts with ~{user}, but there is no such user",
                         hint=f"Write the path out ({PATH_RULES})")
    return os.path.expandvars(expanded)


def _link_loop(path: str | os.PathLike, what: str) -> UsageError:
    return UsageError(f"{what}: {path} is, or goes through, a symbolic link loop",
                      hint="Fix or remove the link, or choose another path")


def real_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` resolved (links followed); a symbolic link loop on the way is a UsageError naming ``what``."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # Python before 3.13 raises RuntimeError for a loop
        if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
            raise
        raise _link_loop(path, what) from None


def check_reachable(path: str | os.PathLike, what: str) -> None:
    """A symbolic link loop in an input path is named as one (os.stat raises ELOOP), not taken for a missing file."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_loop(path, what) from None


def refuse_link(path: Path, what: str) -> None:
    """An output path that is a symbolic link is refused: replacing it would write into whatever it points at."""
    if path.is_symlink():
        raise UsageError(f"{what} {path} is a symbolic link; optkit never writes through a link",
                         hint="Give the real path, or remove the link")


# ----------------------------------------------------------------------------- where optkit may write

def is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_path(path: str | Path, *, protected: Iterable[Path] = (), protected_dirs: Iterable[Path] = (),
                      folder_output: bool = False, what: str = "output", owned=None) -> Path:
    """Refuse, before any work, an output path optkit must not write: the empty path, a device or other
    special file, the input model's files (or anything already in its folder), a directory where a file
    goes (or a file where a folder goes), a file or folder optkit did not write (no sidecar beside it;
    ``owned(path)`` decides instead for outputs that have none), or a place that cannot be written.
    Returns the resolved path."""
    from optkit.types.artifact import optkit_wrote, sidecar_path

    if str(path).strip() == "":
        raise UsageError(f"the {what} path is empty", hint="Give a file name, e.g. -o model.onnx")
    check_path_text(path, f"the {what}")
    raw = Path(path)
    final = real_path(raw, f"the {what}")
    refuse_link(raw, f"the {what}")
    if any(final == Path(p).resolve() for p in protected) or any(
            is_inside(final, Path(d).resolve()) and final.exists() for d in protected_dirs):
        raise UsageError(f"the {what} {raw} is a file of the input model; optkit never overwrites its input",
                         hint="Choose another output path")
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
        if not (owned(final) if owned is not None else optkit_wrote(final)):
            # a sidecar makes it optkit's only if it parses as one and records this file's sha256 (not a '{}')
            why = "" if owned is not None else (f" (no {sidecar_path(final).name} beside it)" if not sidecar_path(final).exists()
                                                else f" ({sidecar_path(final).name} beside it does not record its sha256)")
            raise UsageError(f"the {what} {raw} exists and optkit did not write it{why}; optkit never overwrites "
                             "other files", hint="Delete or move it, or choose another output path")
    parent = final.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create the {what} {raw}: {parent} is a file, not a folder", hint="Choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the {what} {raw}: {parent} is not writable", hint="Choose a writable folder")
    _CHECKED[_key(final)] = _state(final)  # its Staging refuses to publish over anything else found there at commit
    return final


# ----------------------------------------------------------------------------- a run's output folder

RUN_MARKER = ".optkit-run"  # in every output_dir optkit created; a folder without it (or a manifest) is the user's
MANIFEST = "manifest.json"
_LEGACY_MANIFEST_KEYS = {"recipe", "recipe_sha256", "versions", "files"}


def written_by_optkit(out_dir: Path) -> bool:
    """Whether ``out_dir`` is a run's output folder: optkit's marker is in it, or (a folder from before the marker)
    its manifest.json parses as optkit's and every file it lists is there with the sha256 it recorded. A
    manifest.json of the user's own never makes a folder optkit's."""
    out_dir = Path(out_dir)
    if (out_dir / RUN_MARKER).is_file():
        return True
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files or not (
            manifest.get("optkit_manifest") or _LEGACY_MANIFEST_KEYS <= set(manifest)):
        return False
    for rel, entry in files.items():
        path = out_dir / str(rel)
        if not isinstance(entry, dict) or ".." in Path(str(rel)).parts or not path.is_file() or path.is_symlink():
            return False
        try:
            if sha256_file(path) != entry.get("sha256"):
                return False
        except OSError:
            return False
    return True


@contextlib.contextmanager
def run_output_dir(out_dir: Path, *, force: bool = False, what: str = "output_dir") -> Iterator[None]:
    """Hold ``out_dir`` for one ``optkit run``: refuse a non-empty folder of the user's (no marker, no
    manifest) unless ``force``; create it with the marker; lock it, so a second run into it exits 2
    naming the holder's pid. A folder this created is removed again if the run ends before writing
    anything into it (e.g. a bad input found after the check)."""
    check_path_text(out_dir, what)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{what} {out_dir} is a file, not a folder", hint="Set it to a folder path")
    created = not out_dir.exists()
    if created:
        check_output_path(out_dir, folder_output=True, what=what)
        out_dir.mkdir(parents=True)
    else:
        ours = written_by_optkit(out_dir)
        if not ours and any(out_dir.iterdir()) and not force:
            raise UsageError(f"{what} {out_dir} already holds files optkit did not write",
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


def resolve_ref(base: Path, value: str | None, what: str = "path") -> str | None:
    """A recipe path relative to the recipe's folder, ``~`` and ``$VAR`` expanded and a link loop refused
    (``expand_path``, ``check_reachable``; ``what`` names the key in errors); ``pkg.module:fn`` references stay."""
    if value is None:
        return None
    if value.startswith("hf:"):  # a Hugging Face model id, resolved through the hub's cache
        return value
    value = expand_path(value, what)
    target, sep, attr = value.rpartition(":")
    if sep and target.endswith(".py"):
        target = target if Path(target).is_absolute() else str(base / target)
        check_reachable(target, what)
        return f"{target}:{attr}"
    if sep and target and "/" not in target and not Path(value).exists():
        return value
    path = value if Path(value).is_absolute() else str(base / value)
    check_reachable(path, what)
    return path


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary folder for a step's intermediate files, inside the run's output folder when the engine set
    one (``scratch_root``), so a killed run's scratch is found and removed by the next run. The working
    directory is left alone (it is process-wide): every tool is given paths inside this folder."""
    with scratch_folder() as tmp:
        yield tmp


# ------------------------------------------------------------------------------ user text files, capped

RECIPE_CAP = 1 << 20      # a recipe or a model spec (optkit.yaml): 1 MiB
YAML_MAX_DEPTH = 64       # nesting of a recipe or spec: far beyond any real one, far below Python's recursion limit
YAML_MAX_VALUES = 1_000_000  # values of a recipe or spec with its aliases expanded


def read_text_capped(path: str | os.PathLike, cap: int, what: str) -> str:
    """The text of a user's file, refused (UsageError, exit 2) when it is over ``cap`` bytes: a recipe, spec or
    sidecar that large is not one, and reading it whole would only exhaust memory. ``what`` names it."""
    path = Path(path)
    with open(path, "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        size = path.stat().st_size
        raise UsageError(f"{what} {path} is {size:,} bytes; optkit reads at most {cap:,} ({cap >> 20} MiB)",
                         hint=f"Is {path.name} the right file?")
    return data.decode()


def yaml_loader():
    """A safe YAML loader class that refuses nesting deeper than ``YAML_MAX_DEPTH`` with a YAML error (PyYAML's
    composer recurses per level: 100,000 nested brackets would end in a RecursionError)."""
    global _DepthLimitedLoader
    if _DepthLimitedLoader is None:
        import yaml

        class DepthLimitedLoader(yaml.SafeLoader):
            _depth = 0

            def compose_node(self, parent, index):
                self._depth += 1
                try:
                    if self._depth > YAML_MAX_DEPTH:
                        event = self.peek_event()
                        raise yaml.composer.ComposerError(
                            None, None, f"nested more than {YAML_MAX_DEPTH} levels deep", event.start_mark)
                    node = super().compose_node(parent, index)
                finally:
                    self._depth -= 1
                # values once aliases are expanded (what validating walks): '&a [x, x]' nested ten levels of
                # '[*a, *a, ...]' is a few lines of YAML and billions of values
                sizes = self.__dict__.setdefault("_sizes", {})
                if id(node) not in sizes:
                    children = (node.value if isinstance(node, yaml.SequenceNode) else
                                [n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode) else [])
                    sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
                    if sizes[id(node)] > YAML_MAX_VALUES:
                        raise yaml.composer.ComposerError(
                            None, None, f"expands to more than {YAML_MAX_VALUES:,} values (through aliases)",
                            node.start_mark)
                return node

        _DepthLimitedLoader = DepthLimitedLoader
    return _DepthLimitedLoader


_DepthLimitedLoader = None


def load_yaml(text: str):
    """``yaml.safe_load`` with the nesting limit of ``yaml_loader`` (raises ``yaml.YAMLError``)."""
    import yaml

    return yaml.load(text, Loader=yaml_loader())  # a SafeLoader subclass: no arbitrary objects
