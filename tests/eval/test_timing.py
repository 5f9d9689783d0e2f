from __future__ import annotations

import time

from optkit.eval.timing import measure_latency


def test_latency_stats_are_ordered_and_budget_bounded():
    calls = []

    def work():
        calls.append(1)
        time.sleep(0.001)

    start = time.perf_counter()
    stats = measure_latency(work, batch_size=4, threads=1, budget_s=0.2)
    elapsed = time.perf_counter() - start
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms
    assert 0.9 <= stats.p50_ms < 20
    assert stats.iterations >= 5 and len(calls) > stats.iterations  # warm-up calls are not timed
    assert abs(stats.throughput - 4 / (stats.mean_ms / 1e3)) / stats.throughput < 1e-6
    assert elapsed < 1.0


def test_slow_function_still_gets_min_iterations():
    stats = measure_latency(lambda: time.sleep(0.02), batch_size=1, threads=1, budget_s=0.01, min_iters=3)
    assert stats.iterations == 3


def test_max_iterations_cap():
    stats = measure_latency(lambda: None, batch_size=1, threads=1, budget_s=5, max_iters=50)
    assert stats.iterations == 50
