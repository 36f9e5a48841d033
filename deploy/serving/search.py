"""The configuration search (what Triton's Model Analyzer does): profile each executor layout's batch latency, pick the
configurations the SLO allows, and bisect LoadGen's Server target QPS for the highest run that meets the SLO."""
from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from deploy.serving.batcher import BatchPolicy
from deploy.serving.executors import Executors, Layout, ServingConfig
from deploy.serving.server import Response, Server
from deploy.serving.trials import Trial

log = logging.getLogger(__name__)
GRID = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # batch sizes profiled (up to the plan's limit)
LATENCY_FACTOR = 2.0   # a request under load waits for about one batch, then runs in the next: p99 ~ 2 batches
UTILIZATION = 0.85     # the first Server probe: this share of the profiled throughput


@dataclass(frozen=True)
class Profile:
    """One layout's batch latency with every executor busy, and the samples per second that gives."""
    layout: Layout
    latency_ms: dict[int, float]
    samples_per_s: dict[int, float]

    def latency_at(self, batch: int) -> float:
        """Latency at ``batch``, interpolated linearly between the profiled sizes (extrapolated past the last)."""
        sizes = sorted(self.latency_ms)
        if batch in self.latency_ms:
            return self.latency_ms[batch]
        below = max([s for s in sizes if s < batch], default=sizes[0])
        above = min([s for s in sizes if s > batch], default=None)
        if above is None:
            return self.latency_ms[below] * batch / below
        share = (batch - below) / (above - below)
        return self.latency_ms[below] + share * (self.latency_ms[above] - self.latency_ms[below])

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout.label, "executors": self.layout.executors, "threads": self.layout.threads,
                "mode": self.layout.mode, "latency_ms": {str(k): round(v, 3) for k, v in self.latency_ms.items()},
                "samples_per_s": {str(k): round(v, 1) for k, v in self.samples_per_s.items()}}


def burst(executors: Executors, policy: BatchPolicy, samples: np.ndarray, count: int) -> tuple[float, list[float]]:
    """Serve ``count`` samples queued at once; returns the wall seconds and each batch's service time (ms)."""
    done = threading.Event()
    answered: list[Response] = []
    lock = threading.Lock()

    def collect(responses: list[Response]) -> None:
        with lock:
            answered.extend(responses)
            if len(answered) >= count:
                done.set()

    start = time.perf_counter()
    with Server(executors, policy, on_responses=collect) as server:
        server.submit([(i, samples[i % len(samples)]) for i in range(count)])
        done.wait()
    wall = time.perf_counter() - start
    failed = [r.error for r in answered if r.error is not None]
    if failed:
        raise failed[0]
    batches = {}
    for r in answered:  # one service time per batch: taken → answered, the same for its every request
        batches.setdefault((round(r.latency_s - r.queue_wait_s, 6), r.batch_size), None)
    return wall, [s * 1e3 for s, _ in batches]


def single_sample_p50(executors: Executors, samples: np.ndarray, calls: int = 20) -> float:
    """Median ms from submitting one sample alone to its answer (after two warm-up calls): no SLO can be below it."""
    times = []
    with Server(executors, BatchPolicy(1)) as server:
        for i in range(calls + 2):
            start = time.perf_counter()
            server.request(samples[i % len(samples)]).result()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[2:])


def profile_layout(executors: Executors, samples: np.ndarray, limit: int, rounds: int = 3,
                   passes: int = 3) -> Profile:
    """Batch latency and throughput of each profiled size up to ``limit``, every executor busy: ``passes`` passes
    over the sizes, each size ``rounds`` batches per executor after one warm-up batch; per size the lowest of the
    passes' median latencies (and the highest rate).

    Interference only ever adds time, and on a shared 2-core VM two passes back to back measured a size 1.7x apart
    (OpenVINO int8, 2 streams, batch 16: 71 then 124 ms); the simulation ranks layouts and batch sizes on these
    figures, so each needs the layout's own speed. LoadGen's runs then measure whatever the machine does."""
    n = executors.layout.executors
    sizes = [b for b in GRID if b <= limit]
    latency: dict[int, float] = {}
    rate: dict[int, float] = {}
    for _ in range(passes):
        for batch in sizes:
            policy = BatchPolicy(batch)
            burst(executors, policy, samples, n * batch)
            wall, service = burst(executors, policy, samples, n * batch * rounds)
            latency[batch] = min(latency.get(batch, math.inf), statistics.median(service))
            rate[batch] = max(rate.get(batch, 0.0), n * batch * rounds / wall)
    return Profile(executors.layout, latency, rate)


def candidates(profiles: Sequence[Profile], slo_ms: float, limit: int) -> list[tuple[ServingConfig, float]]:
    """Per layout: the largest max batch whose latency fits the SLO LATENCY_FACTOR times over, and the Server QPS
    predicted for it (UTILIZATION of its throughput), best prediction first; then, as fallbacks, each layout at
    batch 1 (the shortest tail when a bigger batch cannot keep it). A layout whose single sample does not fit is
    left out."""
    found, fallbacks = [], []
    for p in profiles:
        fits = [b for b in range(1, limit + 1) if LATENCY_FACTOR * p.latency_at(b) <= slo_ms]
        if not fits:
            continue
        layout = (p.layout.executors, p.layout.threads, p.layout.mode)
        for batch, into in ((max(fits), found), (1, fallbacks)):
            if into is fallbacks and batch == max(fits):
                continue
            qps = p.layout.executors * batch / p.latency_at(batch) * 1e3 * UTILIZATION
            into.append((ServingConfig(batch, 0, *layout), qps))
    return sorted(found, key=lambda c: -c[1]) + sorted(fallbacks, key=lambda c: -c[1])


def best_throughput(profiles: Sequence[Profile]) -> tuple[ServingConfig, float]:
    """The layout and batch with the most samples per second (the Offline configuration) and that rate."""
    p, batch = max(((p, b) for p in profiles for b in p.samples_per_s), key=lambda pb: pb[0].samples_per_s[pb[1]])
    return ServingConfig(batch, 0, p.layout.executors, p.layout.threads, p.layout.mode), p.samples_per_s[batch]


@dataclass(frozen=True)
class Edge:
    """A bisection's outcome: the highest target QPS that met the SLO, and the lowest failing probe above it."""
    best: Trial | None
    above: Trial | None
    trials: tuple[Trial, ...]


def bisect_qps(probe: Callable[[float], Trial], slo_ms: float, start: float, floor: float, max_trials: int,
               ratio: float = 1.1, step: float = 1.3, lo: Trial | None = None, max_misses: int | None = None) -> Edge:
    """Bisect the Server target QPS: up by ``step`` while runs meet the SLO, down while they fail (by ``step`` or the
    square root of the p99's overshoot, whichever is more, and at least to 0.9 × the QPS the run completed), then
    the geometric middle until the failing probe is within ``ratio`` of the passing one (or ``max_trials`` ran, or
    the QPS fell below ``floor``, or ``max_misses`` runs failed before any passed). ``lo``: a run already known to
    pass (its QPS is not probed again)."""
    trials: list[Trial] = []
    hi: Trial | None = None
    qps = start
    while len(trials) < max_trials:
        trial = probe(round(qps, 1))
        trials.append(trial)
        if trial.met(slo_ms):
            lo = trial if lo is None or trial.settings.target_qps > lo.settings.target_qps else lo
        elif hi is None or trial.settings.target_qps < hi.settings.target_qps:
            hi = trial
        low = lo.settings.target_qps if lo else None
        high = hi.settings.target_qps if hi else None
        if low is not None and high is not None:
            if high <= low * ratio or high <= low + 0.2:
                break
            qps = math.sqrt(low * high)
        elif low is not None:
            qps = low * step
        elif max_misses is not None and len(trials) >= max_misses:
            break
        else:  # how far it missed says how far to step down: the QPS it completed, or the p99's overshoot
            done = trial.result.get("completed_qps") or 0.0
            over = math.sqrt(max(1.0, (trial.p99_ms or 0.0) / slo_ms))
            qps = min(high / max(step, over), 0.9 * done if done > 0 else high)
            if qps < floor:
                break
    return Edge(lo, hi, tuple(trials))


def server_search(trial_at: Callable[[ServingConfig, float], Trial], options: list[tuple[ServingConfig, float]],
                  refinements: Callable[[ServingConfig, float], list[ServingConfig]], slo_ms: float, floor: float,
                  max_trials: int, ratio: float = 1.1) -> tuple[ServingConfig | None, Edge, list[Trial]]:
    """The tournament: bisect the best-predicted configuration; each other one (then each refinement of the
    winner) first runs at 1.05 × the best QPS so far and is dropped if that fails, else bisected upwards.

    Returns:
        The winning configuration (None when none met the SLO), its edge, and every trial in order.
    """
    done: list[Trial] = []
    winner, edge = None, Edge(None, None, ())

    def attempt(config: ServingConfig, predicted: float) -> None:
        nonlocal winner, edge
        left = max_trials - len(done)
        best = edge.best.settings.target_qps if edge.best else None
        if left <= 0:
            return
        if best is None:  # nothing met the SLO yet: start below every QPS that failed, give up after 3 misses
            failed = [t.settings.target_qps for t in done]
            start = min([predicted] + [q / 1.2 for q in failed])
            if start < floor:
                return
            misses = 3 if config != options[-1][0] else None
            result = bisect_qps(lambda q: trial_at(config, q), slo_ms, start, floor, left, ratio,
                                max_misses=misses)
        else:
            first = trial_at(config, round(best * 1.05, 1))
            done.append(first)
            if not first.met(slo_ms) or left <= 1:
                return
            result = bisect_qps(lambda q: trial_at(config, q), slo_ms, first.settings.target_qps * 1.1, floor,
                                left - 1, ratio, step=1.1, lo=first)
        done.extend(result.trials)
        if result.best is not None and (best is None or result.best.settings.target_qps > best):
            winner, edge = config, result

    for config, predicted in options:
        attempt(config, predicted)
    if winner is not None:
        for config in refinements(winner, edge.best.settings.target_qps):
            if config != winner:
                attempt(config, 0.0)
    return winner, replace(edge, trials=tuple(done)), done
