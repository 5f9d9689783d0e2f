"""Peak resident memory added while loading and running an artifact (Linux).

Linux keeps a per-process high-water mark (VmHWM) that ``/proc/self/clear_refs`` resets, so the
peak of one measurement can be read in-process without sampling threads. Elsewhere: ``None``.
"""
from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable

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


_ACTIVE: list["PeakMemory"] = []  # measurements in progress: a nested one's reset must not lose their peak


class PeakMemory:
    """``with PeakMemory() as mem: ...`` then ``mem.peak_mb`` (additional MB above the start). Nested uses
    (the batch-memory estimate inside a measurement) keep the outer one's peak."""

    def __init__(self, collect: bool = True) -> None:
        self.peak_mb: float | None = None
        self._base: int | None = None
        self._lost_kb = 0  # the high-water mark a nested measurement reset
        self._collect = collect  # collect garbage first (a full collection takes long in a process that imported torch)

    def __enter__(self) -> "PeakMemory":
        if self._collect:
            gc.collect()
        _release_freed_heap()
        hwm = _status_kb("VmHWM")
        for outer in _ACTIVE:
            outer._lost_kb = max(outer._lost_kb, hwm or 0)
        try:
            _CLEAR.write_text("5")  # reset the high-water mark to the current RSS
            self._base = _status_kb("VmRSS")
        except OSError:
            self._base = None
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        hwm = _status_kb("VmHWM")
        if self._base is not None and hwm is not None:
            self.peak_mb = max(0.0, (max(hwm, self._lost_kb) - self._base) / 1024)


SAFE_FRACTION = 0.5  # a batch may use at most this share of the available memory (the rest: the OS, other runs)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:,.0f} MiB"


def check_batch_memory(run_at: Callable[[int], Any], batch: int, what: str, *, ran: int = 0, io_bytes: int = 0,
                       available: int | None = None) -> None:
    """Refuse (``UsageError``, exit 2) running ``what`` at ``batch`` when its memory would pass ``SAFE_FRACTION``
    of the available memory, before running it: the kernel's OOM killer ends a process without a word.

    ``run_at(b)`` runs one batch of ``b`` samples (building its inputs included); ``ran``: the biggest batch the
    runners have already run (its memory is resident: running it again adds none). Batches of 2*ran (or 1), then
    twice that, ... are run while below ``batch``; the resident memory each adds (high-water mark above the
    start) is extrapolated linearly to ``batch`` from the last two, never below ``io_bytes`` (a sample's inputs
    and outputs) per sample. Probing stops once the estimate fits and the last probe added a measurable amount,
    and refuses once the next probe itself would not fit: at most half of ``batch`` is ever run. Where no
    high-water mark can be read (off Linux) only the ``io_bytes`` bound is checked."""
    from optkit.eval import data as _data
    from optkit.types.errors import UsageError
    from optkit.types.files import human_bytes

    if batch <= max(ran, 1):
        return
    avail = available if available is not None else _data.available_memory()
    if avail is None:
        return
    limit = avail * SAFE_FRACTION

    def refuse(estimate: float, how: str) -> None:
        raise UsageError(f"{what} at batch {batch:,} would need about {_gib(estimate)} of memory ({how}), but this "
                         f"machine has {_gib(avail)} available", hint="Use smaller batch sizes (measure.batch_sizes "
                         "in a recipe, --batch-sizes on the command line)")

    if io_bytes * batch > limit:
        refuse(io_bytes * batch, f"{human_bytes(io_bytes)} of inputs and outputs per sample")
    if _status_kb("VmHWM") is None:
        return
    points: list[tuple[int, float]] = [(ran, 0.0)]
    size = max(1, 2 * ran)

    def at(n: int) -> float:
        (b0, m0), (b1, m1) = points[-2], points[-1]
        return max(io_bytes * n, m1 + (m1 - m0) / (b1 - b0) * (n - b1))

    # a few MB of growth can hide in memory the allocator kept from earlier work: an estimate that fits is only
    # trusted once a probe has added a measurable amount
    measurable = min(64 * 2**20, limit / 16)
    while size < batch:
        with PeakMemory(collect=False) as mem:
            run_at(size)
        if mem.peak_mb is None:
            return
        points.append((size, mem.peak_mb * 2**20))
        estimate = at(batch)
        if estimate <= limit and (points[-1][1] >= measurable or size * 2 >= batch):
            return
        if estimate > limit and (size * 2 >= batch or at(size * 2) > limit):
            refuse(estimate, f"extrapolated from batches of {points[-2][0]:,} and {size:,}")
        size *= 2
