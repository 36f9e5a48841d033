"""The batcher simulation the search ranks configurations with: queueing with known answers, and the ranking."""
from __future__ import annotations

import pytest

from deploy.serving.batcher import BatchPolicy
from deploy.serving.executors import Layout
from deploy.serving.search import Profile
from deploy.serving.simulate import arrivals, max_qps, ranked, simulate

UNIT = arrivals(8000, seed=0)


def test_a_trickle_is_served_at_the_service_time():
    """At 0.2 QPS with 10 ms batches (almost) nobody waits: the latency is the service time plus the overhead."""
    result = simulate(lambda b: 10.0, 1, BatchPolicy(8), qps=0.2, slo_ms=50, unit_arrivals=UNIT, overhead_ms=2.0)
    assert result.p50_ms == pytest.approx(12.0, abs=0.01) and result.p99_ms == pytest.approx(12.0, abs=0.05)
    assert result.over_share == 0 and result.mean_batch < 1.01 and result.queue_share < 0.01


def test_queue_delay_waits_for_company_and_forms_bigger_batches():
    fast = simulate(lambda b: 1.0 + 0.1 * b, 1, BatchPolicy(8, 0), qps=200, slo_ms=50, unit_arrivals=UNIT)
    waiting = simulate(lambda b: 1.0 + 0.1 * b, 1, BatchPolicy(8, 10_000), qps=200, slo_ms=50, unit_arrivals=UNIT)
    assert waiting.mean_batch > 1.5 * fast.mean_batch and waiting.p50_ms > fast.p50_ms
    assert waiting.p99_ms <= 10.0 + 1.0 + 0.1 * 8 + 1e-6  # never longer than the delay plus one full batch


def test_max_qps_stops_before_the_executors_saturate():
    """1 executor, 10 ms per sample whatever the batch (no batching gain): capacity 100/s; an SLO of 50 ms is met
    below it with the M/D/1 queue's headroom, not at it."""
    result = max_qps(lambda b: 10.0 * b, 1, BatchPolicy(1), slo_ms=50, share=0.01, unit_arrivals=UNIT)
    assert result is not None and 50 < result.qps < 100 and result.over_share <= 0.01
    assert max_qps(lambda b: 60.0, 1, BatchPolicy(1), slo_ms=50, share=0.01, unit_arrivals=UNIT) is None


def test_batching_gain_raises_the_answer():
    flat = max_qps(lambda b: 10.0 * b, 1, BatchPolicy(8), slo_ms=50, share=0.005, unit_arrivals=UNIT)
    gain = max_qps(lambda b: 6.0 + 4.0 * b, 1, BatchPolicy(8), slo_ms=50, share=0.005, unit_arrivals=UNIT)
    assert gain.qps > 1.3 * flat.qps


def test_service_time_between_and_past_the_profiled_sizes():
    at = Profile(Layout(1, 2), {1: 2.0, 4: 5.0, 8: 9.0}, {}).latency_at
    assert at(1) == 2.0 and at(2) == pytest.approx(3.0) and at(6) == pytest.approx(7.0) and at(16) == 18.0


def test_ranked_prefers_the_layout_that_serves_more_at_the_slo():
    one = Profile(Layout(1, 2), {1: 5.0, 2: 8.0, 4: 14.0, 8: 26.0}, {})
    two = Profile(Layout(2, 1), {1: 9.0, 2: 15.0, 4: 27.0, 8: 51.0}, {})
    options = ranked([two, one], slo_ms=40, limit=8, share=0.005)
    assert [c.layout for c, _ in options] == [one.layout, two.layout] and options[0][1].qps > options[1][1].qps
    best, sim = options[0]
    # The largest batch that fits, well past what batch 1 alone would serve at that tail (M/D/1 at ~0.5 load)
    assert best.max_batch == 8 and sim.p99_ms <= 40 and sim.over_share <= 0.005 and sim.qps > 150


def test_ranked_leaves_out_a_layout_whose_single_sample_misses_the_slo():
    slow = Profile(Layout(1, 2), {1: 45.0, 2: 80.0}, {})
    assert ranked([slow], slo_ms=40, limit=2, share=0.005) == []
    assert ranked([slow], slo_ms=50, limit=2, share=0.005, overhead_ms=6.0) == []
