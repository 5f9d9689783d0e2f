"""Prometheus metrics of one server (its own registry): requests, queue time, batch sizes, inference, cache."""
from __future__ import annotations

from typing import Any

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TIME_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ServerMetrics:
    def __init__(self, model: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        labels = {"model": model}
        self.requests = Counter("optkit_requests", "Inference requests answered, by HTTP status", ["model", "status"],
                                registry=self.registry)
        self.request_seconds = Histogram("optkit_request_seconds", "Time from a request's arrival to its answer",
                                         ["model"], buckets=TIME_BUCKETS, registry=self.registry).labels(**labels)
        self.queue_seconds = Histogram("optkit_queue_seconds", "Time a request waited in the batcher's queue",
                                       ["model"], buckets=TIME_BUCKETS, registry=self.registry).labels(**labels)
        self.batch_size = Histogram("optkit_batch_size", "Rows per inference run", ["model"], buckets=BATCH_BUCKETS,
                                    registry=self.registry).labels(**labels)
        self.inference_seconds = Histogram("optkit_inference_seconds", "Time of one inference run (a whole batch)",
                                           ["model"], buckets=TIME_BUCKETS, registry=self.registry).labels(**labels)
        self.cache = Counter("optkit_cache", "Response cache lookups, by result", ["model", "result"],
                             registry=self.registry)
        self.queued = Gauge("optkit_queue_requests", "Requests waiting in the batcher's queue", ["model"],
                            registry=self.registry).labels(**labels)
        self.model = model
        self._by_status: dict[int, Any] = {}  # the labelled child per status, looked up once


    def on_batch(self, rows: int, waits: list[float], infer_s: float) -> None:
        self.batch_size.observe(rows)
        self.inference_seconds.observe(infer_s)
        for w in waits:
            self.queue_seconds.observe(w)

    def answered(self, status: int, seconds: float | None = None) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(model=self.model, status=str(status))
        child.inc()
        if seconds is not None:
            self.request_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
