"""The one measurement loop for every runtime: warm-up, then per-iteration host (and CUDA-event device) timings."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from core.errors import UsageError
from deploy.progress import Progress
from runtimes.base import Runtime

MAX_SECONDS = 3600.0         # per runtime and batch size: beyond an hour it is a typo, not a benchmark
MAX_ITERATIONS = 1_000_000


@dataclass(frozen=True)
class BenchConfig:
    """How long to warm up and to measure; the same for every runtime and batch size."""
    warmup_iters: int = 5              # warm-up calls (at least), not timed
    warmup_s: float = 0.0              # and at least this many seconds of warm-up
    iterations: int | None = None      # timed calls; None = run for duration_s
    duration_s: float = 2.0            # timed seconds when iterations is None
    min_iterations: int = 5            # a duration run still times at least this many calls
    max_iterations: int = MAX_ITERATIONS
    cv_warn: float = 0.10              # coefficient of variation above which a result is flagged unstable

    def __post_init__(self) -> None:
        # Every bound is finite: a NaN or infinite duration would make the loop run forever.
        if not (0 <= self.warmup_iters <= MAX_ITERATIONS and 0 <= self.warmup_s <= MAX_SECONDS):
            raise UsageError(f"warm-up must be 0..{MAX_ITERATIONS} iterations and 0..{MAX_SECONDS:g} s, got "
                             f"{self.warmup_iters} and {self.warmup_s}")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise UsageError(f"iterations must be 1..{MAX_ITERATIONS}, got {self.iterations}")
        if self.iterations is None and not 0 < self.duration_s <= MAX_SECONDS:
            raise UsageError(f"the duration must be a number of seconds in (0, {MAX_SECONDS:g}], got "
                             f"{self.duration_s}")




@dataclass(frozen=True)
class Measurement:
    """Raw timings of one runtime at one batch size."""
    batch_size: int
    host_ms: tuple[float, ...]           # end-to-end per iteration: enqueue + wait for the device
    device_ms: tuple[float, ...] | None  # CUDA-event time of the device work (None on the CPU)
    warmup_iters: int
    first_call_ms: float | None          # the first warm-up call (includes lazy init, recompiles, autotuning)
    interrupted: bool = False


def measure(runtime: Runtime, feeds: Mapping[str, np.ndarray], config: BenchConfig,
            progress: Progress | None = None, label: str = "") -> Measurement:
    """Time ``runtime`` on ``feeds``: ``prepare`` once, then ``run`` + ``synchronize`` per iteration.

    Host time is ``time.perf_counter()`` around run + synchronize; on CUDA runtimes a pair of CUDA events recorded
    on the runtime's stream around ``run`` gives the device time as well. Ctrl-C stops the loop and returns what was
    measured, flagged ``interrupted``.
    """
    progress = progress or Progress()
    runtime.prepare(feeds)
    batch = int(next(iter(feeds.values())).shape[0]) if feeds else 0
    run, sync, stream = runtime.run, runtime.synchronize, runtime.stream
    events = _event_pair() if stream is not None else None
    clock = time.perf_counter
    host: list[float] = []
    device: list[float] = []
    first, warm, interrupted = None, 0, False
    progress.start(label, config.iterations, None if config.iterations else config.duration_s)
    try:
        warm_start = clock()
        while warm < config.warmup_iters or clock() - warm_start < config.warmup_s:
            t0 = clock()
            run()
            sync()
            first = (clock() - t0) * 1e3 if first is None else first
            warm += 1
        target = config.iterations or config.max_iterations
        begin = clock()
        while len(host) < target:
            t0 = clock()
            if events:
                events[0].record(stream)
            run()
            if events:
                events[1].record(stream)
            sync()
            t1 = clock()
            host.append((t1 - t0) * 1e3)
            if events:
                device.append(events[0].elapsed_time(events[1]))
            elapsed = t1 - begin
            progress.step(len(host), elapsed)
            if config.iterations is None and elapsed >= config.duration_s and len(host) >= config.min_iterations:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.end()
    n = min(len(host), len(device)) if events else len(host)
    return Measurement(batch, tuple(host[:n]), tuple(device[:n]) if events else None, warm, first, interrupted)


def _event_pair():
    import torch

    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
