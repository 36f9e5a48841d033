"""The one measurement loop for every runtime: warm-up, then timed rounds interleaved across runtimes × batch sizes,
per-call host (and CUDA-event device) timings."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from core.errors import ToolkitError, UsageError
from core.load import LoadMonitor
from deploy.progress import Progress
from runtimes.base import Runtime

MAX_SECONDS = 3600.0         # per runtime and batch size: beyond an hour it is a typo, not a benchmark
MAX_ITERATIONS = 1_000_000
MAX_ROUNDS = 1000


@dataclass(frozen=True)
class BenchConfig:
    """How long to warm up and to measure; the same for every runtime and batch size."""
    warmup_iters: int = 5              # warm-up calls (at least), not timed
    warmup_s: float = 0.0              # and at least this many seconds of warm-up
    iterations: int | None = None      # timed calls; None = run for duration_s
    duration_s: float = 2.0            # timed seconds when iterations is None
    min_iterations: int = 5            # a duration run still times at least this many calls
    rounds: int = 5                    # timed rounds, interleaved across every runtime × batch size measured
    max_iterations: int = MAX_ITERATIONS
    cv_warn: float = 0.10              # coefficient of variation above which a result is flagged unstable

    def __post_init__(self) -> None:
        # Every bound is finite: a NaN or infinite duration would make the loop run forever.
        if not (0 <= self.warmup_iters <= MAX_ITERATIONS and 0 <= self.warmup_s <= MAX_SECONDS):
            raise UsageError(f"warm-up must be 0..{MAX_ITERATIONS} iterations and 0..{MAX_SECONDS:g} s, got "
                             f"{self.warmup_iters} and {self.warmup_s}")
        if self.iterations is not None and not 1 <= self.iterations <= MAX_ITERATIONS:
            raise UsageError(f"iterations must be 1..{MAX_ITERATIONS}, got {self.iterations}")
        if not 1 <= self.rounds <= MAX_ROUNDS:
            raise UsageError(f"rounds must be 1..{MAX_ROUNDS}, got {self.rounds}")
        if self.iterations is None and not 0 < self.duration_s <= MAX_SECONDS:
            raise UsageError(f"the duration must be a number of seconds in (0, {MAX_SECONDS:g}], got "
                             f"{self.duration_s}")




@dataclass(frozen=True)
class Measurement:
    """Raw timings of one runtime at one batch size, round by round."""
    batch_size: int
    rounds_ms: tuple[tuple[float, ...], ...]   # host end-to-end per call (enqueue + wait for the device), per round
    device_ms: tuple[float, ...] | None        # CUDA-event time of the device work (None on the CPU), all rounds
    warmup_iters: int
    first_call_ms: float | None                # the first warm-up call (lazy init, recompiles, autotuning)
    interrupted: bool = False
    error: str | None = None                   # the runtime failed while being timed (its rounds so far are kept)

    @property
    def host_ms(self) -> tuple[float, ...]:
        return tuple(v for r in self.rounds_ms for v in r)


@dataclass
class Cell:
    """One runtime at one batch size, on its feeds, in an interleaved measurement."""
    runtime: Runtime
    feeds: Mapping[str, np.ndarray]
    label: str = ""
    rounds: list[list[float]] = field(default_factory=list)
    device: list[float] = field(default_factory=list)
    warm: int = 0
    first: float | None = None
    error: str | None = None

    def result(self, interrupted: bool) -> Measurement:
        batch = int(next(iter(self.feeds.values())).shape[0]) if self.feeds else 0
        events = self.runtime.stream is not None
        return Measurement(batch, tuple(tuple(r) for r in self.rounds), tuple(self.device) if events else None,
                           self.warm, self.first, interrupted, self.error)


def measure(runtime: Runtime, feeds: Mapping[str, np.ndarray], config: BenchConfig,
            progress: Progress | None = None, label: str = "") -> Measurement:
    """Time one runtime on ``feeds`` (``measure_interleaved`` with one cell)."""
    return measure_interleaved([Cell(runtime, feeds, label)], config, progress)[0]


def measure_interleaved(cells: Sequence[Cell], config: BenchConfig, progress: Progress | None = None,
                        monitor: LoadMonitor | None = None) -> list[Measurement]:
    """Warm every cell up, then time them in ``config.rounds`` interleaved rounds: A B C, A B C, ...

    A neighbour's burst or a clock change then lands on every cell alike instead of on one row, and the rounds give
    the confidence intervals their between-round spread (deploy/bench/stats.py). Per call the host time is
    ``time.perf_counter()`` around run + synchronize; CUDA runtimes also record a pair of CUDA events on their
    stream around ``run`` (the device time). A ``ToolkitError`` from a runtime ends that cell only (its ``error``);
    Ctrl-C ends all of them and returns what was measured, flagged ``interrupted``.

    Args:
        cells: The runtimes × batch sizes, each on its feeds.
        config: Warm-up, rounds and the per-cell duration or iteration count (split evenly over the rounds).
        progress: Progress hooks (one bar over the whole measurement).
        monitor: Marked after every round, so the report can show the machine's load per round.
    """
    progress = progress or Progress()
    rounds = min(config.rounds, config.iterations) if config.iterations else config.rounds
    interrupted = False
    total = None if config.iterations else config.duration_s * len(cells)
    progress.start(", ".join(c.label for c in cells if c.label)[:60], (config.iterations or 0) * len(cells) or None,
                   total)
    begin, done = time.perf_counter(), 0

    def tick() -> None:  # after each timed call, outside the timed region
        nonlocal done
        done += 1
        progress.step(done, time.perf_counter() - begin)

    try:
        for cell in cells:
            _warm_up(cell, config)
        for index in range(rounds):
            for cell in cells:
                if cell.error is None:
                    _time_round(cell, config, index, rounds, tick)
            if monitor is not None:
                monitor.mark()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        progress.end()
    return [c.result(interrupted) for c in cells]


def _warm_up(cell: Cell, config: BenchConfig) -> None:
    rt, clock = cell.runtime, time.perf_counter
    try:
        rt.prepare(cell.feeds)
        start = clock()
        while cell.warm < config.warmup_iters or clock() - start < config.warmup_s:
            t0 = clock()
            rt.run()
            rt.synchronize()
            cell.first = (clock() - t0) * 1e3 if cell.first is None else cell.first
            cell.warm += 1
    except ToolkitError as e:
        cell.error = str(e)


def _time_round(cell: Cell, config: BenchConfig, index: int, rounds: int, tick: Callable[[], None]) -> None:
    """One round of one cell."""
    rt, clock = cell.runtime, time.perf_counter
    if config.iterations:
        calls, seconds = config.iterations // rounds + (index < config.iterations % rounds), None
    else:
        calls, seconds = -(-config.min_iterations // rounds), config.duration_s / rounds
    limit = calls if seconds is None else config.max_iterations // rounds
    events = _event_pair() if rt.stream is not None else None
    samples: list[float] = []
    cell.rounds.append(samples)
    try:
        rt.prepare(cell.feeds)  # the previous cell may have been this runtime at another batch size
        begin = clock()
        while len(samples) < limit:
            t0 = clock()
            if events:
                events[0].record(rt.stream)
            rt.run()
            if events:
                events[1].record(rt.stream)
            rt.synchronize()
            t1 = clock()
            samples.append((t1 - t0) * 1e3)
            if events:
                cell.device.append(events[0].elapsed_time(events[1]))
            tick()
            if seconds is not None and t1 - begin >= seconds and len(samples) >= calls:
                break
    except ToolkitError as e:
        cell.error = str(e)


def _event_pair():
    import torch

    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
