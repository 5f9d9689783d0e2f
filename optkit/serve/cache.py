"""The optional response cache: outputs of identical requests, keyed by a hash of the input tensors, LRU-bounded."""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def request_key(feed: dict[str, np.ndarray]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(feed):
        arr = np.ascontiguousarray(feed[name])
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.data.cast("B"))
    return h.hexdigest()


class ResponseCache:
    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        found = self._items.get(key)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: str, outputs: dict[str, np.ndarray]) -> None:
        self._items[key] = {n: np.array(v) for n, v in outputs.items()}  # a copy: callers may hold views
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)
