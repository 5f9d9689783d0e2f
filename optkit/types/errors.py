"""One error hierarchy, one exit code per kind.

Every error a user can cause or meet carries one line that names the problem and the fix; the CLI
prints it without a traceback and exits with the class's code.
"""
from __future__ import annotations


def first_line(exc: BaseException, limit: int = 240) -> str:
    """``TypeName: first line of the message`` (cut at ``limit``): library errors in one line."""
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__


class OptkitError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message.rstrip(".")
        return f"{text}. {self.hint}" if self.hint else text


class UsageError(OptkitError):
    """Bad command-line usage or bad input (missing file, corrupt model, wrong shape...)."""

    exit_code = 2


class MissingDependencyError(UsageError):
    """An optional backend is not installed; the message names the pip extra that brings it."""


class StepError(OptkitError):
    """A step ran and failed (e.g. a numeric mismatch beyond tolerance)."""

    exit_code = 1


class GateError(OptkitError):
    """A recipe gate was not met."""

    exit_code = 3
