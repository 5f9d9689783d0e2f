"""Whether an existing file or folder is an output optkit wrote, and so may replace.

A sidecar beside it must parse as optkit's and record the sha256 of the artifact's files - which files, its
format's backend says (an OpenVINO IR is its .xml and .bin) - or it must sit in a run folder optkit made (its step
cache rebuilds an entry whose files changed). A ``{}`` or copied sidecar beside a user's file does not make it
optkit's.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

from optkit.backends import BACKENDS, backend
from optkit.types.artifact import sidecar_path
from optkit.types.errors import UsageError
from optkit.types.paths import check_output_path as check_path
from optkit.types.runfolder import RUN_MARKER
from optkit.types.sidecar import check_sidecar, read_sidecar_text, regular_files_digest


def recorded_files(path: Path, fmt: str) -> list[Path] | None:
    """The files a record's sha256 covers for an artifact of format ``fmt`` at ``path`` (None: not known)."""
    if fmt in BACKENDS:
        return backend(fmt).files_at(path)
    return None if path.is_dir() else [path]


def optkit_wrote(path: Path) -> bool:
    """Whether the existing file or folder ``path`` is an output optkit may replace (see the module's text)."""
    car = sidecar_path(path)
    try:
        sidecar = check_sidecar(json.loads(read_sidecar_text(car)))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, OSError):
        return False
    if (path.parent / RUN_MARKER).is_file():
        return True
    try:
        files = recorded_files(path, sidecar.record.format)
        return files is not None and regular_files_digest(files) == sidecar.record.sha256
    except (UsageError, OSError):
        return False


def _why_not_ours(final: Path) -> str:
    # a sidecar makes it optkit's only if it parses as one and records this file's sha256 (not a '{}')
    car = sidecar_path(final)
    return f" (no {car.name} beside it)" if not car.exists() else f" ({car.name} beside it does not record its sha256)"


def check_output_path(path: str | Path, *, protected: Iterable[Path] = (), protected_dirs: Iterable[Path] = (),
                      folder_output: bool = False, what: str = "output",
                      owned: Callable[[Path], bool] | None = None) -> Path:
    """``types.paths.check_output_path`` where an existing output is optkit's when ``optkit_wrote`` says so (the
    error says why not), or when ``owned`` does (an output without a sidecar of its own, e.g. an IR's .bin)."""
    return check_path(path, owned=owned or optkit_wrote, not_owned_why=None if owned else _why_not_ours,
                      protected=protected, protected_dirs=protected_dirs, folder_output=folder_output, what=what)
