"""How a server batches and runs one artifact: the one definition of the serving settings.

A recipe's ``serve:`` section (and the ``serve.yaml`` that ``optkit loadtest`` writes) validates into a
``ServeConfig``; ``optkit serve``'s options are generated from its fields (``cli/serve.py``, with the machinery
of ``cli/from_config.py``); ``serve/app.ModelServer`` and its batcher are configured from it. A new setting is a
new field here, and reaches the recipe, the command line and the server without another copy.
"""
from __future__ import annotations

import typing
from typing import Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

BatchPolicy = Literal["adaptive", "delay"]
POLICIES: tuple[str, ...] = typing.get_args(BatchPolicy)


def is_policy(name: str) -> TypeGuard[BatchPolicy]:
    return name in POLICIES


class ServeConfig(BaseModel):
    """How ``optkit serve`` serves an artifact; ``optkit loadtest`` writes the best one found as a serve: section."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    max_batch: int = Field(16, ge=1, le=4096, description="rows merged into one run at most (1: no batching)")
    max_queue_delay_ms: float = Field(2.0, ge=0, le=10000, description="how long the oldest queued request may "
                                      "wait for others to join its batch")
    batch_policy: BatchPolicy = Field(
        "adaptive", description="how a batch below the max batch waits - adaptive: only while requests are on their "
                                "way in (the queue delay its bound); delay: always up to the queue delay, as Triton")
    preferred_batch: list[int] = Field([], description="batch sizes the batcher sends as soon as it has them")
    instances: int = Field(1, ge=1, le=64, description="model copies, each running batches in its own thread")
    threads: int = Field(1, ge=0, le=1024, description="intra-op threads per instance (0: the runtime's default)")
    cache_size: int = Field(0, ge=0, description="responses kept for identical requests (0: no cache)")
    max_queue: int = Field(1024, ge=1, description="requests waiting at most; beyond it the server answers 503")
    pad_sequences: bool = Field(True, description="token models (an attention_mask input): requests of different "
                                                  "lengths share a batch, right-padded with zeros")

    @property
    def max_queue_delay_s(self) -> float:
        return self.max_queue_delay_ms / 1e3
