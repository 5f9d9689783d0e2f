"""The dynamic batcher with a recording runner: merging up to max_batch or the delay, preferred sizes, groups of
different shapes kept apart, fixed-batch padding, the bounded queue, errors reaching every request of a batch; the
adaptive policy (no idle wait, waiting only for requests on their way in, the next batch started as a run ends);
an instance forming its own batches while the event loop is busy."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from optkit.serve.batcher import Batcher, QueueFull


class Recording:
    input_names, output_names = ["x"], ["y"]

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def infer(self, feed):
        self.batches.append(len(feed["x"]))
        if self.fail:
            raise RuntimeError("runtime said no")
        return {"y": feed["x"].sum(axis=tuple(range(1, feed["x"].ndim))) * 2}


def run(coro):
    return asyncio.run(coro)


async def _many(batcher: Batcher, rows: list[int], width: int = 3):
    batcher.start()
    feeds = [np.full((r, width), i, np.float32) for i, r in enumerate(rows)]
    outs = await asyncio.gather(*(batcher.submit({"x": f}) for f in feeds))
    await batcher.stop()
    return feeds, outs


def test_requests_merge_up_to_max_batch_and_each_gets_its_own_rows_back():
    runner = Recording()
    feeds, outs = run(_many(Batcher([runner], max_batch=4, max_delay_s=0.2, max_queue=100), [1] * 10))
    assert runner.batches == [4, 4, 2]  # the last two waited out the delay
    for f, o in zip(feeds, outs):
        np.testing.assert_array_equal(o["y"], f.sum(1) * 2)


def test_a_preferred_size_is_sent_as_soon_as_it_is_there():
    runner = Recording()
    run(_many(Batcher([runner], max_batch=16, max_delay_s=0.2, max_queue=100, preferred=(2, 4)), [1] * 6))
    assert runner.batches == [4, 2]


def test_shapes_that_cannot_be_concatenated_run_in_separate_batches():
    runner = Recording()

    async def go():
        b = Batcher([runner], max_batch=8, max_delay_s=0.05, max_queue=100)
        b.start()
        outs = await asyncio.gather(b.submit({"x": np.ones((1, 3), np.float32)}),
                                    b.submit({"x": np.ones((1, 5), np.float32)}),
                                    b.submit({"x": np.ones((2, 3), np.float32)}))
        await b.stop()
        return outs

    outs = run(go())
    assert sorted(runner.batches) == [1, 3] and [o["y"].tolist() for o in outs] == [[6.0], [10.0], [6.0, 6.0]]


def test_a_fixed_batch_artifact_is_padded_and_a_batch_of_one_never_merges():
    padded = Recording()
    feeds, outs = run(_many(Batcher([padded], max_batch=16, max_delay_s=0.05, max_queue=100, fixed_batch=4), [1, 2]))
    assert padded.batches == [4] and [o["y"].shape for o in outs] == [(1,), (2,)]
    single = Recording()
    b = Batcher([single], max_batch=16, max_delay_s=0.05, max_queue=100, fixed_batch=1)
    assert b.max_batch == 1
    run(_many(b, [1, 1, 1]))
    assert single.batches == [1, 1, 1]


def test_the_queue_is_bounded():
    async def go():
        b = Batcher([Recording()], max_batch=64, max_delay_s=0.3, max_queue=2, policy="delay")
        b.start()
        first = [asyncio.ensure_future(b.submit({"x": np.ones((1, 3), np.float32)})) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await b.submit({"x": np.ones((1, 3), np.float32)})
        done = await asyncio.gather(*first)
        await b.stop()
        return done

    assert len(run(go())) == 2


def test_a_failed_batch_fails_each_of_its_requests_and_the_batcher_goes_on():
    runner = Recording(fail=True)

    async def go():
        b = Batcher([runner], max_batch=4, max_delay_s=0.05, max_queue=10)
        b.start()
        got = await asyncio.gather(*(b.submit({"x": np.ones((1, 3), np.float32)}) for _ in range(3)),
                                   return_exceptions=True)
        runner.fail = False
        again = await b.submit({"x": np.ones((1, 3), np.float32)})
        await b.stop()
        return got, again

    got, again = run(go())
    assert all(isinstance(g, RuntimeError) for g in got) and again["y"].tolist() == [6.0]


class Slow(Recording):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def infer(self, feed):
        import time

        time.sleep(self.seconds)
        return super().infer(feed)


def test_two_instances_share_the_queue():
    a, b = Slow(0.05), Slow(0.05)  # a run takes long enough that one instance cannot take every batch
    feeds, outs = run(_many(Batcher([a, b], max_batch=2, max_delay_s=0.05, max_queue=100), [1] * 8))
    assert sum(a.batches) + sum(b.batches) == 8 and a.batches and b.batches
    for f, o in zip(feeds, outs):
        np.testing.assert_array_equal(o["y"], f.sum(1) * 2)


def test_adaptive_runs_a_lone_request_at_once_where_delay_waits_out_the_delay():
    import time

    async def one(policy):
        b = Batcher([Recording()], max_batch=16, max_delay_s=0.4, max_queue=10, policy=policy)
        b.start()
        t0 = time.perf_counter()
        await b.submit({"x": np.ones((1, 3), np.float32)})
        took = time.perf_counter() - t0
        await b.stop()
        return took

    assert run(one("adaptive")) < 0.2 <= 0.4 <= run(one("delay")) + 0.01


def test_adaptive_waits_for_a_request_on_its_way_in_and_no_longer_than_the_delay():
    runner = Recording()

    async def go(late_s):
        b = Batcher([runner], max_batch=16, max_delay_s=0.3, max_queue=10)
        b.start()
        b.expect()  # the server has begun reading a second request
        first = asyncio.ensure_future(b.submit({"x": np.ones((1, 3), np.float32)}))
        await asyncio.sleep(late_s)
        second = await b.submit({"x": np.ones((1, 3), np.float32)}, expected=True)
        await first
        await b.stop()
        return second

    run(go(0.05))
    assert runner.batches == [2]  # it waited for the announced request
    runner.batches.clear()
    run(go(0.5))
    assert runner.batches == [1, 1]  # ... but not past the delay


def test_a_withdrawn_request_releases_the_wait():
    import time

    async def go():
        b = Batcher([Recording()], max_batch=16, max_delay_s=1.0, max_queue=10)
        b.start()
        b.expect()
        t0 = time.perf_counter()
        pending = asyncio.ensure_future(b.submit({"x": np.ones((1, 3), np.float32)}))
        await asyncio.sleep(0.02)
        b.withdraw()  # e.g. the expected request was malformed
        await pending
        await b.stop()
        return time.perf_counter() - t0

    assert run(go()) < 0.5


def test_requests_that_pile_up_during_a_run_form_the_next_batch_as_it_ends():
    runner = Slow(0.1)

    async def go():
        b = Batcher([runner], max_batch=16, max_delay_s=0.01, max_queue=100)
        b.start()
        first = asyncio.ensure_future(b.submit({"x": np.ones((1, 3), np.float32)}))
        await asyncio.sleep(0.03)  # the first run is under way
        rest = [asyncio.ensure_future(b.submit({"x": np.ones((1, 3), np.float32)})) for _ in range(5)]
        await asyncio.gather(first, *rest)
        await b.stop()

    run(go())
    assert runner.batches == [1, 5]


def test_an_instance_takes_its_next_batch_without_the_event_loop():
    import time

    runner = Slow(0.05)

    async def go():
        b = Batcher([runner], max_batch=1, max_delay_s=0.01, max_queue=100)
        b.start()
        pending = [asyncio.ensure_future(b.submit({"x": np.full((1, 3), i, np.float32)})) for i in range(3)]
        await asyncio.sleep(0.01)  # the requests reach the queue
        time.sleep(0.4)  # the loop is busy (reading other requests, say): the instance goes on alone
        ran_meanwhile = len(runner.batches)
        outs = await asyncio.gather(*pending)
        await b.stop()
        return ran_meanwhile, outs

    ran_meanwhile, outs = run(go())
    assert ran_meanwhile == 3 and [o["y"].tolist() for o in outs] == [[0.0], [6.0], [12.0]]


def test_an_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="adaptive, delay"):
        Batcher([Recording()], max_batch=4, max_delay_s=0.01, max_queue=4, policy="greedy")


class MaskedTokens:
    """A token model: per-token output ids * mask, and a pooled sum over the mask (what padding must not change)."""
    input_names, output_names = ["input_ids", "attention_mask"], ["tokens", "pooled"]

    def __init__(self) -> None:
        self.shapes: list[tuple] = []

    def infer(self, feed):
        ids, mask = feed["input_ids"], feed["attention_mask"]
        self.shapes.append(ids.shape)
        return {"tokens": (ids * mask).astype(np.float32), "pooled": (ids * mask).sum(1).astype(np.float32)}


def test_token_requests_of_different_lengths_share_a_padded_batch_and_get_their_own_length_back():
    runner = MaskedTokens()

    async def go():
        b = Batcher([runner], max_batch=8, max_delay_s=0.05, max_queue=10,
                    padded=frozenset({"input_ids", "attention_mask"}), sequence_outputs=frozenset({"tokens"}))
        b.start()
        feeds = [{"input_ids": np.arange(1, n + 1, dtype=np.int64)[None], "attention_mask": np.ones((1, n), np.int64)}
                 for n in (3, 5, 2)]
        outs = await asyncio.gather(*(b.submit(f) for f in feeds))
        await b.stop()
        return feeds, outs

    feeds, outs = run(go())
    assert runner.shapes == [(3, 5)]  # one run, padded to the longest
    for f, o in zip(feeds, outs):
        np.testing.assert_array_equal(o["tokens"], f["input_ids"].astype(np.float32))
        assert o["pooled"].tolist() == [float(f["input_ids"].sum())]
