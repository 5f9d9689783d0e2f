"""Do an artifact's files still have the sha256 its sidecar recorded, and do its ancestors' files?

A sidecar records the digest of the artifact it sits beside (``record.sha256``) and of every ancestor
(``lineage``). ``optkit report`` and ``optkit compare`` check them before showing figures measured on
those bytes: a model edited or swapped after optkit measured it gets a warning naming the file and both
digests (``--strict``: a UsageError, exit 2, like any other bad input).

An ancestor is checked where its file can be found - at the path its record names, or under its name in
the artifact's folder (a moved run) - and has a sidecar beside it, i.e. it is one of the chain's own
outputs; an original model the user keeps elsewhere is not. Only regular files are read (a FIFO or a
device a sidecar names is skipped, never opened).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optkit.backends.ownership import recorded_files
from optkit.types.artifact import Artifact, sidecar_path
from optkit.types.errors import OptkitError, UsageError
from optkit.types.records import StepRecord
from optkit.types.sidecar import regular_files_digest


@dataclass(frozen=True)
class Mismatch:
    """A file whose sha256 is not the one a sidecar recorded for it."""

    path: Path
    step: str  # the step whose row records the digest
    recorded: str
    actual: str
    ancestor: bool

    def text(self) -> str:
        whose = f"the lineage records for its {self.step} step" if self.ancestor else "its sidecar records"
        return (f"{self.path} does not match the sha256 {whose} (recorded {self.recorded}, file has {self.actual}): "
                "the figures shown were measured on other bytes")


def _digest(files: list[Path] | None) -> str | None:
    if not files:
        return None
    try:
        return regular_files_digest(files)
    except OSError:
        return None


def _find_ancestor(record: StepRecord, artifact: Artifact) -> list[Path]:
    """The ancestor's files: where it was written, and under its name beside ``artifact`` (a moved run); each
    only if it is there with a sidecar beside it (one of the chain's own outputs)."""
    named = Path(record.artifact)
    found: list[Path] = []
    for candidate in (named, artifact.path.parent / named.name):
        if not candidate.is_absolute() or candidate == artifact.path or candidate in found:
            continue
        if (candidate.is_file() or candidate.is_dir()) and sidecar_path(candidate).is_file():
            found.append(candidate)
    return found


def check_digests(artifact: Artifact) -> list[Mismatch]:
    """Every file of ``artifact`` and of its findable ancestors whose sha256 differs from the recorded one."""
    found: list[Mismatch] = []
    if artifact.record is not None:
        actual = _digest(artifact.files())
        if actual is not None and actual != artifact.record.sha256:
            found.append(Mismatch(artifact.path, artifact.record.step, artifact.record.sha256, actual, False))
    for record in artifact.lineage:
        if record.step == "original":  # the user's own model: optkit did not write it
            continue
        for path in _find_ancestor(record, artifact):
            try:
                files = recorded_files(path, record.format)
            except (OptkitError, OSError):
                continue
            actual = _digest(files)
            if actual is not None and actual != record.sha256:
                found.append(Mismatch(path, record.step, record.sha256, actual, True))
    return found


def verify_digests(artifact: Artifact, warn: Callable[[str], None], *, strict: bool = False) -> None:
    """Warn once per mismatching file; under ``strict`` the first one is a UsageError (exit 2) instead."""
    mismatches = check_digests(artifact)
    if strict and mismatches:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise UsageError(mismatches[0].text() + more,
                         hint="Re-create the artifact with optkit, or leave out --strict to go on with a warning")
    for mismatch in mismatches:
        warn(mismatch.text())
