"""Paths as the user wrote them, and where optkit may write.

A path from an option or a recipe is checked as text first (no control characters), then expanded (``~``,
``$VAR``) and resolved with link loops named as such. An output path is refused before any work when writing it
could destroy something that is not optkit's own; who owns an existing output is the caller's to say (``owned``:
optkit's outputs carry a sidecar, which ``backends/ownership.py`` reads).
"""
from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from optkit.types.errors import UsageError
from optkit.types.files import remember_checked

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VAR = re.compile(r"\$(?:\{(?P<braced>[^}]*)\}|(?P<name>\w+))")
PATH_RULES = "optkit expands ~ and $VAR in paths, in recipes and options alike"


def _shown(text: str) -> str:
    """``text`` with control characters written as escapes: an error stays one readable line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def check_path_text(value: str | os.PathLike[str], what: str) -> str:
    """Refuse a path no one could type or see: a NUL byte (the OS cannot even look it up) or another control
    character (a newline in a file name). ``what`` names the option or recipe key."""
    text = os.fspath(value)
    bad = _CONTROL.search(text)
    if bad:
        kind = "a NUL byte" if bad.group() == "\0" else f"a control character ({_shown(bad.group())})"
        raise UsageError(f"{what}: the path '{_shown(text)}' contains {kind}",
                         hint="Give a path of printable characters")
    return text


def expand_path(value: str | os.PathLike[str], what: str) -> str:
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


def _link_loop(path: str | os.PathLike[str], what: str) -> UsageError:
    return UsageError(f"{what}: {path} is, or goes through, a symbolic link loop",
                      hint="Fix or remove the link, or choose another path")


def real_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` resolved (links followed); a symbolic link loop on the way is a UsageError naming ``what``."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # Python before 3.13 raises RuntimeError for a loop
        if isinstance(exc, OSError) and exc.errno != errno.ELOOP:
            raise
        raise _link_loop(path, what) from None


def check_reachable(path: str | os.PathLike[str], what: str) -> None:
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


def check_output_path(path: str | Path, *, owned: Callable[[Path], bool], protected: Iterable[Path] = (),
                      protected_dirs: Iterable[Path] = (), folder_output: bool = False, what: str = "output",
                      not_owned_why: Callable[[Path], str] | None = None) -> Path:
    """Refuse, before any work, an output path optkit must not write: the empty path, a device or other
    special file, the input model's files (or anything already in its folder), a directory where a file
    goes (or a file where a folder goes), a file or folder optkit did not write (``owned(path)`` decides;
    ``not_owned_why(path)`` adds why to the error), or a place that cannot be written.
    Returns the resolved path."""
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
        if not owned(final):
            why = not_owned_why(final) if not_owned_why is not None else ""
            raise UsageError(f"the {what} {raw} exists and optkit did not write it{why}; optkit never overwrites "
                             "other files", hint="Delete or move it, or choose another output path")
    parent = final.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"cannot create the {what} {raw}: {parent} is a file, not a folder", hint="Choose another output path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the {what} {raw}: {parent} is not writable", hint="Choose a writable folder")
    remember_checked(final)  # its Staging refuses to publish over anything else found there at commit
    return final


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

