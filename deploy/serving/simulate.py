"""The dynamic batcher simulated on measured batch latencies: Poisson arrivals through batcher.py's policy and N
executors, giving each request's latency, so the search can rank configurations before LoadGen measures them, and
say how much of the Offline throughput any batcher setting can keep at the SLO on this machine's measured latencies
(a queue fed at random needs headroom that a queue filled up front does not)."""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from deploy.serving.batcher import BatchPolicy
from deploy.serving.executors import ServingConfig
from deploy.serving.search import GRID, Profile

REQUESTS = 8_000       # simulated requests per QPS (the over-SLO share of 0.5 % is then 40 requests)


@dataclass(frozen=True)
class Simulated:
    """One simulated load: its latency percentiles (ms), the share of requests over the SLO, the mean batch and
    the share of latency spent queued."""
    qps: float
    p50_ms: float
    p99_ms: float
    over_share: float
    mean_batch: float
    queue_share: float


def arrivals(count: int, seed: int) -> np.ndarray:
    """Poisson arrival times at 1 QPS (seconds; divide by the QPS): the same draws for every QPS and configuration,
    so their comparisons are not noise."""
    return np.cumsum(np.random.default_rng(seed).exponential(1.0, count))


def simulate(service_ms: Callable[[int], float], executors: int, policy: BatchPolicy, qps: float, slo_ms: float,
             unit_arrivals: np.ndarray, overhead_ms: float = 0.0) -> Simulated:
    """Serve ``unit_arrivals / qps`` through ``policy`` (batcher.py's rules: ``max_batch`` at once when that many
    wait, else the largest preferred size queued, else everything once the oldest waited the queue delay) on
    ``executors`` concurrent executors whose batch of b takes ``service_ms(b)``; ``overhead_ms`` is added to every
    latency (what the load generator and the response path cost outside the executors).
    """
    arr = (unit_arrivals * (1000.0 / qps)).tolist()          # ms
    n, delay = len(arr), policy.queue_delay_us / 1000.0
    thresholds = sorted({*policy.preferred, policy.max_batch})
    free = [0.0] * executors
    latency = np.empty(n)
    queued = np.empty(n)
    batches, i = 0, 0
    while i < n:
        t = max(heapq.heappop(free), arr[i])
        while True:
            waiting = bisect.bisect_right(arr, t, i) - i
            fits = [k for k in thresholds if k <= waiting]
            if fits:
                size = fits[-1]
                break
            deadline = arr[i] + delay
            if t >= deadline:
                size = waiting
                break
            nxt = next(k for k in thresholds if k > waiting)   # the next size that would be taken at once
            reach = arr[i + nxt - 1] if i + nxt - 1 < n else math.inf
            t = min(reach, deadline)
        end = t + service_ms(size)
        heapq.heappush(free, end)
        block = np.asarray(arr[i:i + size])
        latency[i:i + size] = end - block + overhead_ms
        queued[i:i + size] = t - block
        i += size
        batches += 1
    return Simulated(qps, float(np.percentile(latency, 50)), float(np.percentile(latency, 99)),
                     float(np.mean(latency > slo_ms)), n / batches, float(queued.sum() / max(latency.sum(), 1e-9)))


def max_qps(service_ms: Callable[[int], float], executors: int, policy: BatchPolicy, slo_ms: float,
            share: float, unit_arrivals: np.ndarray, overhead_ms: float = 0.0, ratio: float = 1.02
            ) -> Simulated | None:
    """The highest QPS whose simulated share of requests over ``slo_ms`` is at most ``share`` (bisected to within
    ``ratio``), or None when even a trickle of requests misses it."""
    capacity = executors * max(b / service_ms(b) for b in range(1, policy.max_batch + 1)) * 1000.0
    lo_qps = min(1.0, capacity / 100)
    low = simulate(service_ms, executors, policy, lo_qps, slo_ms, unit_arrivals, overhead_ms)
    if low.over_share > share:
        return None
    hi_qps = capacity * 1.05   # past the executors' throughput the queue grows without bound
    while hi_qps > lo_qps * ratio:
        mid = math.sqrt(lo_qps * hi_qps)
        result = simulate(service_ms, executors, policy, mid, slo_ms, unit_arrivals, overhead_ms)
        if result.over_share <= share:
            low, lo_qps = result, mid
        else:
            hi_qps = mid
    return low


DELAYS_US = (0, 1000, 2000, 5000)     # queue delays simulated (a fifth of a 50 ms SLO at most; more only adds wait)


def ranked(profiles: Sequence[Profile], slo_ms: float, limit: int, share: float, overhead_ms: float = 0.0,
           sizes: Sequence[int] = GRID) -> list[tuple[ServingConfig, Simulated]]:
    """Per executor layout, its best (max batch, queue delay) by simulated QPS at the SLO with at most ``share`` of
    the requests over it, best layout first. The batch latencies are the profile's, measured with every executor
    busy; ``overhead_ms`` is what a request spends outside the executors (the load generator's issue and response
    paths), measured as the single-sample p50 less the profile's batch-1 latency."""
    unit = arrivals(REQUESTS, seed=0)
    out = []
    for p in profiles:
        service = p.latency_at
        found: tuple[ServingConfig, Simulated] | None = None
        for batch in [b for b in sizes if b <= limit]:
            if service(batch) + overhead_ms > slo_ms:
                break
            for delay_us in DELAYS_US:
                if delay_us / 1000 + service(batch) + overhead_ms > slo_ms:
                    continue
                result = max_qps(service, p.layout.executors, BatchPolicy(batch, delay_us), slo_ms, share, unit,
                                 overhead_ms, ratio=1.03)
                if result is not None and (found is None or result.qps > found[1].qps):
                    found = (ServingConfig(batch, delay_us, p.layout.executors, p.layout.threads, p.layout.mode),
                             result)
        if found is not None:
            out.append(found)
    return sorted(out, key=lambda c: -c[1].qps)
