"""The base of every typed record: typed fields, unknown keys kept, dumped with only the keys that were set (so a
sidecar holds exactly what was measured and older versions read it). Its own module so that the records of one kind
of model (``types/generative.py``) and ``types/records.py``, which holds them in ``Metrics``, import it without an
import circle."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Record(BaseModel):
    """A JSON-backed record: typed fields, unknown keys kept, dumped with only the keys that were set."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)
