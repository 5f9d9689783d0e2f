"""``--time-budget``: when every build must have ended (``Clock``), whether a candidate still has time to be built,
and how long a stopped candidate ran (``StopTimes``, kept in ``work/`` so a rerun with less time left skips it
instead of starting and stopping it again)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optkit.optimize.model import Search
from optkit.optimize.timing import timing_reserve_s
from optkit.types.ui import UI

MIN_BUILD_S = 2.0  # less time left than this: a build's process cannot even start and look in the cache


@dataclass
class Clock:
    """The time budget: builds end in time for the final timing pass to end on it."""

    started: float          # time.perf_counter() when optimize started
    budget_s: float         # --time-budget
    timing_budget_s: float  # per row of the final timing pass

    def deadline(self, search: Search) -> float:
        """When every build must have ended: the budget less the final timing of the survivors so far and one
        more (at most half the budget)."""
        survivors = len(search.built()) + 1
        search.timing_reserve_s = min(timing_reserve_s(survivors, search.original is not None, self.timing_budget_s),
                                      self.budget_s / 2)
        return self.started + self.budget_s - search.timing_reserve_s


def too_little(left: float, name: str, ran: float | None, budget_s: float) -> str | None:
    """Why a candidate is not started with ``left`` seconds to its deadline (None: start it). ``ran``: how long it
    ran when it was last stopped at the time budget, without finishing."""
    need = max(MIN_BUILD_S, ran or 0.0)
    if left > need:
        return None
    because = (f"it ran {ran:.0f}s without finishing when last stopped" if ran and ran >= MIN_BUILD_S
               else f"a build needs at least {MIN_BUILD_S:.0f}s to start")
    return f"{max(left, 0.0):.0f}s left of the {budget_s:.0f}s time budget, too little for {name} ({because})"


class StopTimes:
    """How long each candidate ran before it was stopped at the time budget, kept at ``path`` for the next run (by
    its steps and input): one that needs more than the time left is skipped instead of started and stopped."""

    def __init__(self, path: Path, search: Search, common: dict[str, Any]) -> None:
        source = search.source
        self.path, self.changed = path, False
        self.facts = {"source": source.record.sha256 if source.record else source.digest(), "common": common}
        try:
            ran = json.loads(self.path.read_text())
        except (OSError, ValueError):
            ran = {}
        self.ran: dict[str, float] = ran if isinstance(ran, dict) else {}

    def key(self, name: str, steps: list[dict[str, Any]]) -> str:
        from optkit.engine.cache import json_sha256

        return f"{name}:{json_sha256({**self.facts, 'steps': steps})}"

    def get(self, key: str) -> float | None:
        value = self.ran.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    def set(self, key: str, seconds: float | None) -> None:
        if self.ran.get(key) != seconds:
            self.changed = True
            if seconds is None:
                self.ran.pop(key, None)
            else:
                self.ran[key] = round(seconds, 1)

    def save(self, ui: UI) -> None:
        from optkit.types.files import write_json

        if not self.changed:
            return
        try:
            write_json(self.path, self.ran)
        except OSError as exc:  # only the next run's shortcut is lost
            ui.warn(f"could not record how long the stopped candidates ran: {exc}")
