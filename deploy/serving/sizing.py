"""How many queries a LoadGen run needs for its early-stopping check to pass: LoadGen's own rule (loadgen/results.cc,
early_stopping.cc: a one-sided binomial test at 99 % confidence, tolerance 0) solved for the run length."""
from __future__ import annotations

import math

CONFIDENCE = 0.99  # LoadGen's early-stopping confidence


def _binomial_cdf(n: int, k: int, q: float) -> float:
    """P(X <= k) for X ~ Binomial(n, q), summed in log space (n reaches tens of thousands)."""
    log_q, log_p = math.log(q), math.log1p(-q)
    base = math.lgamma(n + 1)
    return sum(math.exp(base - math.lgamma(x + 1) - math.lgamma(n - x + 1) + x * log_q + (n - x) * log_p)
               for x in range(0, min(k, n) + 1))


def passing_queries(overlatency: int, percentile: float = 0.99) -> int:
    """LoadGen's ``find_min_passing``: the fewest queries under the latency target that, next to ``overlatency``
    queries over it, show the ``percentile`` latency is under the target with 99 % confidence (the smallest h with
    P(at most ``overlatency`` of h + ``overlatency`` queries are over it) < 1 %, each over it with probability
    1 - ``percentile``)."""
    known = _PASSING.setdefault(percentile, [])
    q = 1.0 - percentile
    h = known[-1] if known else math.ceil(math.log(1 - CONFIDENCE) / math.log(percentile)) - 1
    for t in range(len(known), overlatency + 1):  # each search starts from the one before: h grows with t
        while _binomial_cdf(h + t, t, q) >= 1 - CONFIDENCE:
            h += 1
        known.append(h)
    return known[overlatency]


_PASSING: dict[float, list[int]] = {}  # percentile → h(0), h(1), ... as far as computed


def server_queries(overlatency_share: float, percentile: float = 0.99) -> int:
    """The fewest queries after which a Server run whose share of queries over the SLO is ``overlatency_share``
    passes LoadGen's early stopping (it needs queries >= h(t) + t, t = the queries over the SLO).

    0 gives LoadGen's floor (every query under the SLO: 459 at p99); 0.005, half of what a p99 allows, 2,000-odd.

    Raises:
        ValueError: a share at or above 1 - ``percentile`` (no run length is enough).
    """
    if overlatency_share <= 0:
        return passing_queries(0, percentile)
    if overlatency_share >= (1 - percentile) * (1 - 1e-9):  # 1 - 0.99 is 0.010000000000000009 in floats
        raise ValueError(f"an over-SLO share of {overlatency_share:.2%} never passes a p{percentile * 100:g} check")
    for t in range(1, 2000):
        needed = passing_queries(t, percentile) + t
        first = math.floor((t - 1) / overlatency_share) + 1   # the run lengths with ceil(share * n) == t
        last = math.floor(t / overlatency_share)
        if max(needed, first) <= last:
            return max(needed, first)
    raise ValueError(f"an over-SLO share of {overlatency_share:.4%} needs runs of hundreds of thousands of queries")


def stream_queries(percentile: float) -> int:
    """The fewest queries a SingleStream (p90) or MultiStream (p99) run needs for LoadGen's percentile estimate."""
    return passing_queries(1, percentile) + 1
