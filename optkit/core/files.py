"""File helpers: content digests and all-or-nothing writes.

A step never leaves a half-written artifact: everything it writes goes to temporary names in the
destination folder and is renamed into place only once every file is complete and verified.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any


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
            tmp = final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")
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
                old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        self._committed = True

    def __exit__(self, *exc_info: object) -> None:
        if self._committed:
            return
        for tmp, _ in self._pending:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        for folder in self._created_dirs:
            try:
                folder.rmdir()
            except OSError:
                pass
