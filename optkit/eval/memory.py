"""Peak resident memory added while loading and running an artifact (Linux).

Linux keeps a per-process high-water mark (VmHWM) that ``/proc/self/clear_refs`` resets, so the
peak of one measurement can be read in-process without sampling threads. Elsewhere: ``None``.
"""
from __future__ import annotations

import gc
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_freed_heap() -> None:
    """glibc keeps freed memory mapped; hand it back so an earlier step's garbage is not reused unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """``with PeakMemory() as mem: ...`` then ``mem.peak_mb`` (additional MB above the start)."""

    def __init__(self) -> None:
        self.peak_mb: float | None = None
        self._base: int | None = None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        _release_freed_heap()
        try:
            _CLEAR.write_text("5")  # reset the high-water mark to the current RSS
            self._base = _status_kb("VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kb("VmHWM")
        if self._base is not None and hwm is not None:
            self.peak_mb = max(0.0, (hwm - self._base) / 1024)
