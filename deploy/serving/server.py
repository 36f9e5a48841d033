"""The serving loop: a dynamic batcher in front of N executors, one dispatcher thread each, every request answered
exactly once (its output row, or the error that concerns it alone)."""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from deploy.serving.batcher import BatchPolicy, DynamicBatcher, QueueTimeout, Request, ServerClosed
from deploy.serving.executors import Executors
from runtimes.errors import InputMismatchError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Response:
    """The answer to one request: its output row or the error, and where its time went (seconds)."""
    key: Hashable
    output: np.ndarray | None
    error: BaseException | None
    queue_wait_s: float                     # arrival → an executor took its batch
    latency_s: float                        # arrival → answered
    batch_size: int                         # the batch it ran in (0: never ran)


class ServerStats:
    """Counts and time sums over the answered requests, and each batch's service time (thread-safe)."""
    KEPT = 50_000                            # batches and latencies kept for percentiles (a run has fewer)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed = self.failed = self.timed_out = 0
        self.queue_wait_s = self.latency_s = 0.0
        self.batch_sizes: Counter[int] = Counter()
        self.service_s: dict[int, list[float]] = {}   # batch size → service times (taken → answered)
        self.latencies_s: list[float] = []            # arrival → answered, inside the server

    def add(self, responses: Sequence[Response], batch: bool) -> None:
        with self._lock:
            if batch and responses:
                first = responses[0]
                self.batch_sizes[first.batch_size] += 1
                kept = self.service_s.setdefault(first.batch_size, [])
                if len(kept) < self.KEPT:
                    kept.append(first.latency_s - first.queue_wait_s)
            for r in responses:
                if r.error is None:
                    self.completed += 1
                    self.queue_wait_s += r.queue_wait_s
                    self.latency_s += r.latency_s
                    if len(self.latencies_s) < self.KEPT:
                        self.latencies_s.append(r.latency_s)
                elif isinstance(r.error, QueueTimeout):
                    self.timed_out += 1
                else:
                    self.failed += 1

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            batches = sum(self.batch_sizes.values())
            inside = np.percentile(self.latencies_s, [50, 99]) * 1e3 if self.latencies_s else (None, None)
            return {"completed": self.completed, "failed": self.failed, "timed_out": self.timed_out,
                    "batches": batches,
                    "mean_batch": sum(k * v for k, v in self.batch_sizes.items()) / batches if batches else None,
                    "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                    "queue_wait_share": self.queue_wait_s / self.latency_s if self.latency_s > 0 else None,
                    "mean_latency_ms": self.latency_s / self.completed * 1e3 if self.completed else None,
                    # what the server itself saw (LoadGen's latency adds its issue and response paths)
                    "inside_p50_ms": None if inside[0] is None else round(float(inside[0]), 3),
                    "inside_p99_ms": None if inside[1] is None else round(float(inside[1]), 3),
                    "service_ms": {str(k): {"p50": round(float(np.median(v)) * 1e3, 3),
                                            "p99": round(float(np.percentile(v, 99)) * 1e3, 3), "n": len(v)}
                                   for k, v in sorted(self.service_s.items()) if v}}


class Server:
    """Requests in, responses out: ``submit`` queues samples; each response goes to ``on_responses`` (one call per
    batch, in the batch's order) and to the request's Future when :meth:`request` made one.

    A request whose input does not fit the model is answered with its error at once; a batch whose inference fails is
    split and its requests run one by one, so only the failing one gets the error. ``close()`` answers everything
    still queued (``drain``) or fails it with ServerClosed, then stops the dispatchers; the executors stay loaded
    for the next server.
    """

    def __init__(self, executors: Executors, policy: BatchPolicy,
                 on_responses: Callable[[list[Response]], None] | None = None) -> None:
        if policy.max_batch > executors.max_batch:
            raise ValueError(f"max_batch {policy.max_batch} above the executors' {executors.max_batch}")
        self.executors, self.policy, self._on_responses = executors, policy, on_responses
        self.stats = ServerStats()
        self._batcher = DynamicBatcher(policy, on_timeout=self._timed_out)
        self._threads = [threading.Thread(target=self._dispatch, args=(b,), name=f"serving-{i}", daemon=True)
                         for i, b in enumerate(executors.backends)]
        for backend in executors.backends:
            backend.on_done = self._done
        self._closed = False
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(drain=exc[0] is None)

    def submit(self, items: Sequence[tuple[Hashable, np.ndarray]]) -> None:
        """Queue ``(key, sample)`` pairs; never blocks on inference. After close they are answered ServerClosed."""
        self._enqueue([Request(key, data) for key, data in items])

    def request(self, data: np.ndarray, key: Hashable = None) -> Future:
        """One sample; the Future resolves to its output row or raises its error."""
        req = Request(key, data, future=Future())
        self._enqueue([req])
        return req.future

    def close(self, drain: bool = True, timeout_s: float = 60.0) -> None:
        """Stop: answer the queued requests (``drain``) or fail them with ServerClosed, wait for the dispatchers
        and for every batch in flight. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if drain:
            self._batcher.close()
        else:
            dropped = self._batcher.cancel()
            self._answer_errors(dropped, ServerClosed("the server shut down before running this request"))
        for thread in self._threads:
            thread.join(timeout_s)
        for backend in self.executors.backends:
            backend.wait_all()

    def abort(self) -> None:
        """Fail everything queued and answer new requests at once (Ctrl-C during a LoadGen run: it must still get
        an answer for every sample it issues)."""
        self.close(drain=False)

    def _enqueue(self, requests: list[Request]) -> None:
        ok, bad = [], []
        shape, dtype = self.executors.sample_shape, np.dtype(self.executors.dtype)
        for r in requests:
            fits = isinstance(r.data, np.ndarray) and r.data.shape == shape and r.data.dtype == dtype
            (ok if fits else bad).append(r)
        for r in bad:
            found = (f"{tuple(r.data.shape)} {r.data.dtype}" if isinstance(r.data, np.ndarray)
                     else type(r.data).__name__)
            self._answer_errors([r], InputMismatchError(f"request {r.key!r}: sample {found}, expected "
                                                        f"{shape} {dtype}"))
        if not ok:
            return
        try:
            self._batcher.submit(ok)
        except ServerClosed as e:
            self._answer_errors(ok, e)

    def _dispatch(self, backend) -> None:
        buffer = np.empty((self.policy.max_batch, *self.executors.sample_shape), self.executors.dtype)
        while True:
            backend.wait_idle()
            batch = self._batcher.next_batch()
            if batch is None:
                return
            try:
                # A fresh array per batch when the backend runs asynchronously (it reads the array later).
                samples = [r.data for r in batch]
                x = np.stack(samples) if backend.asynchronous else np.stack(samples, out=buffer[:len(batch)])
                backend.start(x, batch)
            except Exception as e:  # noqa: BLE001 - a dispatcher must answer every request, whatever failed
                self._failed(batch, e)

    def _failed(self, batch: list[Request], error: BaseException) -> None:
        if len(batch) > 1:  # whose fault? run each alone, so only the failing request gets the error
            log.debug("batch of %d failed (%s); retrying its requests one by one", len(batch), error)
            for r in batch:
                r.alone = True
            self._batcher.submit(batch, retry=True)
        else:
            self._answer_errors(batch, error, ran=True)

    def _done(self, batch: list[Request], outputs: dict[str, np.ndarray]) -> None:
        now = time.perf_counter()
        out = outputs[self.executors.output_name]
        self._deliver([Response(r.key, out[i], None, r.taken - r.arrived, now - r.arrived, len(batch))
                       for i, r in enumerate(batch)], batch, batch=True)

    def _timed_out(self, requests: list[Request]) -> None:
        limit = self.policy.max_queue_wait_us
        self._answer_errors(requests, QueueTimeout(f"waited over {limit} µs in the queue"))

    def _answer_errors(self, requests: list[Request], error: BaseException, ran: bool = False) -> None:
        if not requests:
            return
        now = time.perf_counter()
        self._deliver([Response(r.key, None, error, (r.taken or now) - r.arrived, now - r.arrived,
                                1 if ran else 0) for r in requests], requests, batch=ran)

    def _deliver(self, responses: list[Response], requests: list[Request], batch: bool) -> None:
        self.stats.add(responses, batch)
        for r, response in zip(requests, responses):
            if r.future is not None and not r.future.done():
                if response.error is None:
                    r.future.set_result(response.output)
                else:
                    r.future.set_exception(response.error)
        if self._on_responses is not None:
            try:
                self._on_responses(responses)
            except Exception:  # noqa: BLE001 - the caller's handler must not stop the dispatcher
                log.exception("on_responses failed")
