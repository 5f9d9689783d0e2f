"""A run's output folder: optkit's marker in it, its lock, and the build lock of a step cache entry.

A folder is optkit's when its marker is in it (or, from before the marker, a manifest whose files all match):
only then may a run write into a non-empty one without ``--force``.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from optkit.types.errors import UsageError
from optkit.types.files import sha256_file
from optkit.types.paths import check_output_path, check_path_text

BUILD_LOCK = ".optkit-build.lock"
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
        check_output_path(out_dir, owned=written_by_optkit, folder_output=True, what=what)
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

