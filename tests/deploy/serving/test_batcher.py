"""The dynamic batcher on its own: arrival order, when a batch is due (max batch, preferred sizes, queue delay),
requests that waited too long, and shutdown."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.errors import UsageError
from deploy.serving.batcher import BatchPolicy, DynamicBatcher, Request, ServerClosed


def requests(n: int, start: int = 0) -> list[Request]:
    return [Request(i, np.zeros(1, np.float32)) for i in range(start, start + n)]


def test_batches_come_out_in_arrival_order_and_at_most_max_batch():
    batcher = DynamicBatcher(BatchPolicy(max_batch=4))
    batcher.submit(requests(10))
    keys = [[r.key for r in batcher.next_batch()] for _ in range(3)]
    assert keys == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # delay 0: the last two go as soon as an executor asks


def test_a_partial_batch_waits_for_the_queue_delay_then_goes():
    batcher = DynamicBatcher(BatchPolicy(max_batch=8, queue_delay_us=80_000))
    batcher.submit(requests(3))
    start = time.perf_counter()
    batch = batcher.next_batch()
    waited = time.perf_counter() - start
    assert [r.key for r in batch] == [0, 1, 2]
    assert 0.07 <= waited < 1.0, waited  # flushed by the delay, not before and not much after


def test_a_full_batch_does_not_wait_for_the_delay():
    batcher = DynamicBatcher(BatchPolicy(max_batch=4, queue_delay_us=5_000_000))
    batcher.submit(requests(5))
    start = time.perf_counter()
    assert len(batcher.next_batch()) == 4
    assert time.perf_counter() - start < 0.5


def test_a_preferred_size_goes_at_once():
    batcher = DynamicBatcher(BatchPolicy(max_batch=8, queue_delay_us=5_000_000, preferred=(2, 4)))
    batcher.submit(requests(5))
    start = time.perf_counter()
    assert [r.key for r in batcher.next_batch()] == [0, 1, 2, 3]  # the largest preferred size queued
    assert time.perf_counter() - start < 0.5


def test_a_sleeping_executor_wakes_when_a_request_arrives():
    batcher = DynamicBatcher(BatchPolicy(max_batch=4))
    got: list = []
    worker = threading.Thread(target=lambda: got.append(batcher.next_batch()))
    worker.start()
    time.sleep(0.05)
    assert not got  # asleep on the condition variable, nothing to take
    batcher.submit(requests(1))
    worker.join(2)
    assert [r.key for r in got[0]] == [0]


def test_retries_run_alone_and_first():
    batcher = DynamicBatcher(BatchPolicy(max_batch=4))
    batcher.submit(requests(3))
    retry = requests(2, start=10)
    for r in retry:
        r.alone = True
    batcher.submit(retry, retry=True)
    assert [[r.key for r in batcher.next_batch()] for _ in range(3)] == [[10], [11], [0, 1, 2]]


def test_requests_that_waited_too_long_are_handed_back_not_run():
    expired: list[Request] = []
    batcher = DynamicBatcher(BatchPolicy(max_batch=4, max_queue_wait_us=20_000), on_timeout=expired.extend)
    batcher.submit(requests(2))
    time.sleep(0.05)
    batcher.submit(requests(1, start=2))
    assert [r.key for r in batcher.next_batch()] == [2]
    assert [r.key for r in expired] == [0, 1]


def test_close_drains_then_stops_and_refuses_new_requests():
    batcher = DynamicBatcher(BatchPolicy(max_batch=4, queue_delay_us=5_000_000))
    batcher.submit(requests(2))
    batcher.close()
    assert [r.key for r in batcher.next_batch()] == [0, 1]  # queued before close: still served, without the delay
    assert batcher.next_batch() is None
    with pytest.raises(ServerClosed):
        batcher.submit(requests(1))


def test_close_wakes_an_idle_executor_and_cancel_returns_the_queue():
    batcher = DynamicBatcher(BatchPolicy(max_batch=4))
    got: list = []
    worker = threading.Thread(target=lambda: got.append(batcher.next_batch()))
    worker.start()
    time.sleep(0.05)
    batcher.close()
    worker.join(2)
    assert got == [None] and not worker.is_alive()
    other = DynamicBatcher(BatchPolicy(max_batch=4, queue_delay_us=5_000_000))
    other.submit(requests(3))
    assert [r.key for r in other.cancel()] == [0, 1, 2] and other.next_batch() is None


@pytest.mark.parametrize("kwargs", [{"max_batch": 0}, {"max_batch": 300}, {"queue_delay_us": -1},
                                    {"max_batch": 4, "preferred": (8,)}, {"max_queue_wait_us": 0}])
def test_bad_policies_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        BatchPolicy(**kwargs)
