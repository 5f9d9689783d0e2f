"""Assertions and runners for the bad-input suite.

Every bad input must end in: the documented exit code (2 bad usage/input, 1 a step failed, 3 a gate
failed), exactly one ``error:`` line on stderr, no ``Traceback`` anywhere, and nothing written: the
watched folders (the output folder, the folders of the input files) list exactly the same entries,
hidden temporary files included, and every file keeps its sha256.
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import stat
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from optkit.types.files import sha256_file

ERROR_PREFIX = "error:"
IGNORED_NAMES = {"__pycache__"}  # Python's own bytecode cache next to an imported factory file


class CaseTimeout(BaseException):
    """Raised by the alarm when an in-process case runs too long (it did real work it should have refused).

    A BaseException, so optkit's ``except Exception`` cannot swallow it."""


# ----------------------------------------------------------------------------------------- running

@contextlib.contextmanager
def time_limit(seconds: float | None):
    """SIGALRM-based limit for in-process runs (main thread only); no-op when ``seconds`` is falsy."""
    if not seconds or not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(signum, frame):  # noqa: ARG001
        raise CaseTimeout(f"still running after {seconds:g}s: the bad input was not refused before real work")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def cli(*args: Any, timeout: float | None = 60, env: Mapping[str, str] | None = None):
    """Run ``optkit ARGS`` in-process with CliRunner; exceptions are caught (and asserted on later)."""
    from typer.testing import CliRunner

    from optkit.cli.app import app

    argv = [str(a) for a in args]
    with time_limit(timeout):
        return CliRunner(env={"OPTKIT_DEBUG": None, **(env or {})}).invoke(app, argv)


def memory_cap_bytes() -> int:
    """An address-space cap well below this machine's memory: an absurd allocation fails, not the machine."""
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 16 << 30
    return max(8 << 30, int(phys * 0.7))


def _cap_memory() -> None:  # preexec_fn of the subprocess runner
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = memory_cap_bytes() if hard == resource.RLIM_INFINITY else min(memory_cap_bytes(), hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def run_cli(*args: Any, timeout: float = 240, env: Mapping[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m optkit ARGS`` as a real subprocess (as tests.conftest.run_cli), plus a wall-clock
    limit and an address-space cap, so a runaway case fails instead of hanging or exhausting memory."""
    full_env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    full_env.pop("OPTKIT_DEBUG", None)
    try:
        return subprocess.run([sys.executable, "-m", "optkit", *map(str, args)], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=timeout, preexec_fn=_cap_memory)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"optkit {' '.join(map(str, args))} still running after {timeout}s") from None


# -------------------------------------------------------------------------------------- assertions

def _streams(result) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of a CompletedProcess or a CliRunner result (whose stderr is separate)."""
    if isinstance(result, subprocess.CompletedProcess):
        return result.returncode, result.stdout or "", result.stderr or ""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else repr(exc)
        last = tb.strip().splitlines()[-1] if tb.strip() else repr(exc)
        raise AssertionError(f"uncaught {type(exc).__name__} escaped the CLI (exit {result.exit_code}): {last}\n"
                             f"{tb}\n--- stderr ---\n{result.stderr}")
    return result.exit_code, result.stdout, result.stderr


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "<empty>"


def _matches(needle: str | Sequence[str], line: str) -> bool:
    options = [needle] if isinstance(needle, str) else list(needle)
    return any(str(opt).lower() in line.lower() for opt in options)


def assert_clean_failure(result, code: int, *needles: str | Sequence[str]) -> str:
    """Exit ``code``, exactly one ``error:`` line on stderr containing every needle (case-insensitive; a
    tuple of strings: any of them), no traceback anywhere. Works for CliRunner results and CompletedProcess.
    Returns the error line."""
    rc, out, err = _streams(result)
    summary = f"exit {rc} (want {code}); stderr last line: {last_line(err)!r}"
    assert rc == code, f"{summary}\n--- stderr ---\n{err[-3000:]}"
    assert "Traceback" not in out and "Traceback" not in err, f"Traceback in output; {summary}\n{err[-3000:]}"
    errors = [ln for ln in err.splitlines() if ln.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, f"{len(errors)} '{ERROR_PREFIX}' lines on stderr; {summary}\n--- stderr ---\n{err[-3000:]}"
    for needle in needles:
        assert _matches(needle, errors[0]), f"error line lacks {needle!r}: {errors[0]!r}"
    return errors[0]


def assert_clean_exit(result, codes: Iterable[int] = (0, 1, 2, 3)) -> int:
    """Any of ``codes`` and no traceback (for runs that may legitimately succeed or fail)."""
    rc, out, err = _streams(result)
    assert rc in set(codes), f"exit {rc} not in {sorted(codes)}; stderr last line: {last_line(err)!r}"
    assert "Traceback" not in out and "Traceback" not in err, f"Traceback in output: {last_line(err)!r}"
    return rc


# ---------------------------------------------------------------------------------------- snapshots

def _entry(path: Path) -> tuple:
    st = os.lstat(path)
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return ("link", os.readlink(path))
    if stat.S_ISDIR(mode):
        return ("dir",)
    if stat.S_ISREG(mode):
        return ("file", st.st_size, sha256_file(path))
    if stat.S_ISCHR(mode):
        return ("char", st.st_rdev)
    return ("other", stat.S_IFMT(mode))


def snapshot(folder: Path | str) -> dict[str, tuple] | None:
    """The full recursive listing of ``folder`` (hidden files included) with each file's size and sha256.

    ``None`` when it does not exist; a single entry ``'.'`` when it is not a directory. Only Python's
    ``__pycache__`` folders are left out (importing a factory file may write one)."""
    folder = Path(folder)
    if not os.path.lexists(folder):
        return None
    if not folder.is_dir() or folder.is_symlink():
        return {".": _entry(folder)}
    listing: dict[str, tuple] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_NAMES)
        for name in dirs + sorted(files):
            path = Path(root) / name
            listing[str(path.relative_to(folder))] = _entry(path)
    return listing


def assert_same_snapshot(before: dict | None, after: dict | None, folder: Path | str) -> None:
    if before == after:
        return
    if before is None or after is None:
        raise AssertionError(f"{folder}: {'created' if before is None else 'removed'} ({after or before})")
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    raise AssertionError(f"{folder} changed: added {added}, removed {removed}, changed {changed}")


def input_folders(args: Iterable[Any], base: Path) -> set[Path]:
    """The folders of every argument that names an existing file or folder under ``base`` (a file's
    folder; a factory reference 'file.py:build' counts as its file)."""
    found: set[Path] = set()
    base = Path(base).resolve()
    for arg in map(str, args):
        for candidate in {arg, arg.rsplit(":", 1)[0]}:
            if not candidate.startswith("/"):
                continue
            path = Path(candidate)
            if not os.path.lexists(path):
                continue
            real = path.parent if not path.is_dir() or path.is_symlink() else path
            real = Path(os.path.abspath(real))
            if real == base or base in real.parents:
                found.add(real)
    return found


class Watch:
    """Snapshots of several folders, taken now and compared by ``assert_unchanged()``."""

    def __init__(self, folders: Iterable[Path | str]) -> None:
        self.folders = sorted({Path(f) for f in folders}, key=str)
        self.before = {f: snapshot(f) for f in self.folders}

    def assert_unchanged(self) -> None:
        for folder in self.folders:
            assert_same_snapshot(self.before[folder], snapshot(folder), folder)


def check_case(args: Sequence[Any], code: int, needles: Sequence[str | Sequence[str]] = (), *,
               tmp_path: Path, watch: Iterable[Path] = (), runner=cli, **runner_kwargs):
    """Run one bad-input case and assert everything the suite promises: exit code, one error line
    naming ``needles``, no traceback, and no change in ``tmp_path``, ``watch`` or any input's folder."""
    base = Path(tmp_path).parent  # pytest's basetemp: session fixtures live there too
    watched = Watch({Path(tmp_path), *map(Path, watch), *input_folders(args, base)})
    result = runner(*args, **runner_kwargs)
    assert_clean_failure(result, code, *needles)
    watched.assert_unchanged()
    return result


# ------------------------------------------------------------------------------- case templates

class Lazy(dict):
    """A format_map namespace that builds fixtures only when a template names them."""

    def __init__(self, request, **known) -> None:
        super().__init__(**known)
        self.request = request

    def __missing__(self, key):
        value = self.request.getfixturevalue(key)
        self[key] = value
        return value


def fill(template, ns: Lazy):
    """Fill '{fixture[key]}' placeholders in a string, or in every string of a list/tuple."""
    if isinstance(template, str):
        return template.format_map(ns)
    return type(template)(fill(t, ns) for t in template)


OUT_FILE = "out/m.onnx"        # relative to the case's tmp_path: its folder must never appear
OUT_FOLDER = "out/model_dir"   # prune / distill write a model folder


def run_template(request, tmp_path: Path, args: Sequence[str], code: int,
                 needles: Sequence[str | Sequence[str]] = (), **kwargs):
    """Fill a case's templates ({tmp}, {out}, {outdir}, {fixture[key]}...) and run it with check_case."""
    ns = Lazy(request, tmp=tmp_path, out=tmp_path / OUT_FILE, outdir=tmp_path / OUT_FOLDER)
    return check_case(fill(list(args), ns), code, [fill(n, ns) for n in needles], tmp_path=tmp_path, **kwargs)
