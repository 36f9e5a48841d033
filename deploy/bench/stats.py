"""Confidence intervals for timings measured in interleaved rounds, and for the ratio of two such timings.

The method, written once: a two-stage (round-block) bootstrap. Each replicate draws as many rounds as were timed,
with replacement, and within each drawn round as many of its samples as it holds, with replacement; the statistic
(median latency, or mean latency for throughput) of the pooled draw is one replicate. The 95 % interval is the 2.5th
and 97.5th percentile of BOOTSTRAP_REPLICATES replicates from a fixed seed (so a report recomputes identically).
Resampling whole rounds, not single calls, carries the drift between rounds (a neighbour's burst, a frequency
change) into the interval; with one round it is the ordinary bootstrap of the calls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

BOOTSTRAP_REPLICATES = 2000
SKETCH_POINTS = 256      # a round with more calls is resampled through this many of its quantiles
CONFIDENCE = 0.95
SEED = 20261207
METHOD = ("95 % percentile interval of a two-stage bootstrap: rounds resampled with replacement, then the calls "
          f"within each drawn round ({BOOTSTRAP_REPLICATES} replicates, fixed seed)")
_Z = 1.959963984540054  # the normal quantile of 0.975, for the duration a decision needs


Rounds = Sequence[Sequence[float]]


@dataclass(frozen=True)
class Replicates:
    """Bootstrap replicates of one row's median and mean latency (ms)."""
    median: np.ndarray
    mean: np.ndarray
    seconds: float          # the timed seconds behind them (sum of every call)


def replicates(rounds: Rounds, n: int = BOOTSTRAP_REPLICATES, seed: int = SEED) -> Replicates | None:
    """Bootstrap replicates of the median and mean of ``rounds`` (lists of per-call latencies, one per round).

    A draw of a round's n calls with replacement is a multinomial count over its calls, so each replicate is a
    weighted median / mean over fixed points (sorted once) and every replicate is computed at once. A round of more
    than SKETCH_POINTS calls is represented by that many of its quantiles (its empirical distribution to within
    1/SKETCH_POINTS), still drawn n times: a GPU row of thousands of calls costs no more than a CPU row.
    """
    blocks = [np.asarray(r, dtype=np.float64) for r in rounds if len(r)]
    if not blocks:
        return None
    rng = np.random.default_rng(seed)
    points = [b if b.size <= SKETCH_POINTS else np.quantile(b, (np.arange(SKETCH_POINTS) + 0.5) / SKETCH_POINTS)
              for b in blocks]
    offsets = np.cumsum([0] + [p.size for p in points])
    weights = np.zeros((n, offsets[-1]), dtype=np.int32)
    chosen = rng.integers(0, len(blocks), (n, len(blocks)))
    for k, (block, pts) in enumerate(zip(blocks, points)):
        draws = (chosen == k).sum(axis=1)       # how often each replicate drew round k
        for times in range(1, int(draws.max(initial=0)) + 1):
            rows = np.nonzero(draws >= times)[0]
            weights[rows, offsets[k]:offsets[k + 1]] += rng.multinomial(block.size, np.full(pts.size, 1 / pts.size),
                                                                        size=rows.size)
    flat = np.concatenate(points)
    order = np.argsort(flat, kind="stable")
    cumulative = np.cumsum(weights[:, order], axis=1, dtype=np.int32)
    total = cumulative[:, -1]
    medians = flat[order][(2 * cumulative < total[:, None]).sum(axis=1)]
    means = weights @ flat / total  # float64 @ int32 promotes
    return Replicates(medians, means, float(sum(b.sum() for b in blocks)) / 1e3)


def interval(values: np.ndarray) -> tuple[float, float]:
    """The central CONFIDENCE interval of bootstrap replicates."""
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def median_ci(rounds: Rounds) -> tuple[float, float] | None:
    """95 % interval of the median latency (ms)."""
    reps = replicates(rounds)
    return None if reps is None else interval(reps.median)


def throughput_ci(rounds: Rounds, batch_size: int) -> tuple[float, float] | None:
    """95 % interval of the throughput (images/s = batch / mean latency)."""
    reps = replicates(rounds)
    if reps is None:
        return None
    lo, hi = interval(reps.mean)
    return (batch_size * 1e3 / hi, batch_size * 1e3 / lo) if lo > 0 else None


@dataclass(frozen=True)
class RatioJudgement:
    """current ÷ baseline for a "bigger is worse" figure (latency; for throughput, baseline ÷ current)."""
    ratio: float                         # point estimate
    ci95: tuple[float, float]
    outcome: str                         # ok | regressed | inconclusive
    seconds_to_decide: float | None      # inconclusive: timed seconds per row on the current side that would decide
                                         # it at the same spread; None when the current side alone cannot
    baseline_too_noisy: bool = False     # inconclusive and no current duration can decide: re-measure the baseline


def judge_ratio(current: np.ndarray, baseline: np.ndarray, point: float, limit: float,
                current_seconds: float) -> RatioJudgement:
    """Regressed when the whole interval of current/baseline lies above ``limit`` (1 + allowed slowdown), ok when
    it lies at or below it, inconclusive when it straddles it.

    Args:
        current, baseline: Matching bootstrap replicates of the statistic on each side (same count).
        point: The ratio of the two measured statistics.
        limit: 1 + the allowed slowdown.
        current_seconds: The current side's timed seconds for this row.
    """
    ratios = current / baseline
    lo, hi = interval(ratios)
    if lo > limit:
        return RatioJudgement(point, (lo, hi), "regressed", None)
    if hi <= limit:
        return RatioJudgement(point, (lo, hi), "ok", None)
    seconds, noisy = _seconds_to_decide(current, baseline, point, limit, current_seconds)
    return RatioJudgement(point, (lo, hi), "inconclusive", seconds, noisy)


def _seconds_to_decide(current: np.ndarray, baseline: np.ndarray, point: float, limit: float,
                       seconds: float) -> tuple[float | None, bool]:
    """How long the current side would have to be timed for the interval to clear ``limit``, at the same spread.

    On the log scale the ratio's variance is the sum of both sides'; only the current side's shrinks with more
    calls (as 1/duration). Solve  z·sqrt(var_b + var_c·k) = |log point − log limit|  for k = seconds / seconds'.
    """
    gap = abs(math.log(point) - math.log(limit)) if point > 0 else 0.0
    var_c, var_b = float(np.var(np.log(current))), float(np.var(np.log(baseline)))
    if gap == 0 or var_c == 0:
        return None, False
    k = ((gap / _Z) ** 2 - var_b) / var_c
    if k <= 0:
        return None, True
    return seconds / k, False
