"""The dynamic batcher: requests wait in one FIFO queue until a batch is worth running (Triton's dynamic batching)."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

import numpy as np

from core.contract import MAX_BATCH
from core.errors import ToolkitError, UsageError


class ServerClosed(ToolkitError):
    """A request submitted to, or still queued in, a server that is shutting down."""


class QueueTimeout(ToolkitError):
    """A request that waited in the queue longer than the policy allows (answered at once, not run)."""


@dataclass(frozen=True)
class BatchPolicy:
    """When the batcher hands a batch to a free executor (Triton's ``dynamic_batching`` semantics).

    A free executor takes ``max_batch`` requests as soon as that many wait; else the largest preferred size that
    is queued; else everything queued once the oldest request has waited ``queue_delay_us``.
    """
    max_batch: int = 8                       # the largest batch an executor runs
    queue_delay_us: int = 0                  # how long the oldest request may wait for more to join (0 = never)
    preferred: tuple[int, ...] = ()          # batch sizes sent at once when that many are queued
    max_queue_wait_us: int | None = None     # a request older than this when taken is answered QueueTimeout

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise UsageError(f"max_batch {self.max_batch}: expected 1..{MAX_BATCH}")
        if not 0 <= self.queue_delay_us <= 10_000_000:
            raise UsageError(f"queue delay {self.queue_delay_us} µs: expected 0..10,000,000 (10 s)")
        if any(not 1 <= p <= self.max_batch for p in self.preferred):
            raise UsageError(f"preferred batch sizes {list(self.preferred)}: each must be 1..max_batch "
                             f"({self.max_batch})")
        if self.max_queue_wait_us is not None and self.max_queue_wait_us <= 0:
            raise UsageError(f"max queue wait {self.max_queue_wait_us} µs: expected > 0 or None")


@dataclass
class Request:
    """One sample to run: its caller's key, the input (one sample, without the batch dimension), and when it
    arrived (``time.perf_counter()``)."""
    key: Hashable
    data: np.ndarray
    arrived: float = field(default_factory=time.perf_counter)
    taken: float = 0.0                       # when an executor took it (set by the batcher)
    alone: bool = False                      # run in a batch of its own (a retry after its batch failed)
    future: Any = None                       # a concurrent.futures.Future to resolve, when the caller wants one


class DynamicBatcher:
    """A FIFO of requests shared by the executors; each free executor calls :meth:`next_batch`.

    Nothing busy-waits: an executor sleeps on a condition variable until a request arrives, the oldest request's
    queue delay runs out, or the batcher closes. Requests come out in arrival order (retries first).
    """

    def __init__(self, policy: BatchPolicy, on_timeout: Callable[[list[Request]], None] | None = None) -> None:
        self.policy = policy
        self._queue: deque[Request] = deque()
        self._alone: deque[Request] = deque()   # retries, each run as a batch of one before the queue
        self._cond = threading.Condition()
        self._closed = False
        self._on_timeout = on_timeout

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._alone)

    def submit(self, requests: list[Request], retry: bool = False) -> None:
        """Queue ``requests`` (in this order); ``retry``: requests already accepted once (queued even while closing,
        so a draining server still answers them).

        Raises:
            ServerClosed: the batcher is closed; none of them was queued.
        """
        with self._cond:
            if self._closed and not retry:
                raise ServerClosed("the server is shutting down: request refused")
            for request in requests:
                (self._alone if request.alone else self._queue).append(request)
            self._cond.notify_all()

    def next_batch(self) -> list[Request] | None:
        """Block until a batch is due; None once the batcher is closed and empty (the executor then stops)."""
        while True:
            expired: list[Request] = []
            with self._cond:
                batch = self._due(expired)
                while batch is None and not expired:
                    if self._closed and not self._queue and not self._alone:
                        return None
                    self._cond.wait(self._wait_s())
                    batch = self._due(expired)
            if expired and self._on_timeout is not None:
                self._on_timeout(expired)  # outside the lock: the callback answers them
            if batch:
                return batch

    def close(self) -> None:
        """Stop accepting requests; executors drain what is queued, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel(self) -> list[Request]:
        """Stop accepting requests and remove every queued one (returned, for the caller to answer)."""
        with self._cond:
            self._closed = True
            dropped = list(self._alone) + list(self._queue)
            self._alone.clear()
            self._queue.clear()
            self._cond.notify_all()
        return dropped

    def _due(self, expired: list[Request]) -> list[Request] | None:
        """The batch to run now (lock held), or None to keep waiting; timed-out requests go to ``expired``."""
        now = time.perf_counter()
        limit = self.policy.max_queue_wait_us
        if limit is not None:
            while self._queue and (now - self._queue[0].arrived) * 1e6 > limit:
                expired.append(self._queue.popleft())
        if self._alone:
            return self._take(self._alone, 1, now)
        n = len(self._queue)
        if n == 0:
            return None
        policy = self.policy
        if n >= policy.max_batch:
            return self._take(self._queue, policy.max_batch, now)
        fits = [p for p in policy.preferred if p <= n]
        if fits:
            return self._take(self._queue, max(fits), now)
        if self._closed or (now - self._queue[0].arrived) * 1e6 >= policy.queue_delay_us:
            return self._take(self._queue, n, now)
        return None

    def _wait_s(self) -> float | None:
        """How long to sleep (lock held): until the oldest request's delay or queue limit runs out, or until
        notified when the queue is empty."""
        if not self._queue:
            return None
        waits = [self.policy.queue_delay_us]
        waits += [self.policy.max_queue_wait_us] if self.policy.max_queue_wait_us is not None else []
        left = min(waits) / 1e6 - (time.perf_counter() - self._queue[0].arrived)
        return max(left, 0.0) + 1e-5 if math.isfinite(left) else None

    @staticmethod
    def _take(queue: deque[Request], n: int, now: float) -> list[Request]:
        batch = [queue.popleft() for _ in range(n)]
        for request in batch:
            request.taken = now
        return batch
