"""Single-thread timing runs every runner, and the threads a runtime starts, on one core."""
from __future__ import annotations

import os
import threading

import pytest

from optkit.eval.timing import one_core

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")


def test_one_thread_pins_the_caller_and_the_threads_it_starts_then_restores():
    before = os.sched_getaffinity(0)
    seen = {}
    with one_core(1) as core:
        assert os.sched_getaffinity(0) == {core} and core in before
        worker = threading.Thread(target=lambda: seen.update(mask=os.sched_getaffinity(0)))  # like OpenVINO's
        worker.start()
        worker.join()
    assert seen["mask"] == {core}
    assert os.sched_getaffinity(0) == before


def test_more_threads_are_left_to_the_scheduler():
    before = os.sched_getaffinity(0)
    with one_core(0) as core, one_core(4) as other:
        assert core is None and other is None and os.sched_getaffinity(0) == before


def test_the_affinity_is_restored_after_an_error():
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError):
        with one_core(1):
            raise RuntimeError("a runner failed")
    assert os.sched_getaffinity(0) == before
