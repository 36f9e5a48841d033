"""The regression gate on synthetic bench and pipeline reports whose samples have known distributions: its three
outcomes, the duration that decides an inconclusive row, parity, top-1, one-sided rows, environment changes, baseline
checks and the --max-slowdown parser."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.errors import UsageError
from deploy.bench.gate import BaselineError, check_baseline, compare, load_baseline, parse_slowdown
from deploy.formats import PIPELINE_FORMAT as FORMAT, PIPELINE_FORMAT_VERSION as FORMAT_VERSION
from deploy.bench.render import gate_failure, gate_markdown, gate_text
from deploy.formats import BENCH_FORMAT, BENCH_FORMAT_VERSION as BENCH_VERSION

ENV = {"cpu": {"model": "AMD EPYC", "usable_cores": 2}, "gpu": {"available": False},
       "libraries": {"torch": "2.14.1", "onnxruntime": "1.31.1"}, "threads": {"torch_intra_op": 2,
                                                                              "onnxruntime_intra_op": 2},
       "host": "a", "timestamp": "2026-01-01T00:00:00+00:00"}


def rounds(p50=100.0, spread=0.02, drift=0.0, n=20, rounds=5, seed=0) -> list[list[float]]:
    """Per-call latencies with a known distribution: log-normal around ``p50`` (``spread`` = sigma of the log), each
    round shifted by a log-normal ``drift`` (a neighbour's burst, a clock change)."""
    rng = np.random.default_rng(seed)
    return [list(p50 * np.exp(drift * rng.standard_normal() + spread * rng.standard_normal(n))) for _ in range(rounds)]


def bench_row(runtime="onnxruntime", batch=8, p50=100.0, parity=True, precision="fp32", samples=None, seed=0,
              **spread):
    samples = rounds(p50, seed=seed, **spread) if samples is None else samples
    flat = np.concatenate(samples) if samples else np.array([])
    return {"runtime": runtime, "precision": precision, "batch_size": batch, "model": "m.onnx",
            "iterations": int(flat.size), "latency_ms": {"p50": float(np.median(flat)) if flat.size else None,
                                                         "mean": float(flat.mean()) if flat.size else None,
                                                         "cv": 0.02, "samples": int(flat.size)},
            "throughput": batch * 1e3 / flat.mean() if flat.size else 0.0,
            "parity": None if parity is None else {"passed": parity}, "samples_ms": {"unit": "ms", "rounds": samples}}


def bench(*rows, env=ENV) -> dict:
    return {"format": BENCH_FORMAT, "format_version": BENCH_VERSION, "model": "m.onnx", "environment": env,
            "results": list(rows)}


def pipeline(*rows, env=ENV) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "out": "runs/x", "environment": env,
            "rows": list(rows)}


def pipeline_row(runtime="onnxruntime", precision="int8", batch=1, p50=10.0, top1=0.95, parity=True, seed=0):
    row = bench_row(runtime, batch, p50, parity, precision, seed=seed)
    return {"runtime": runtime, "precision": precision, "batch_size": batch, "model": "m.onnx",
            "p50_ms": row["latency_ms"]["p50"], "p99_ms": p50, "mean_ms": row["latency_ms"]["mean"],
            "iterations": row["iterations"], "cv": 0.02, "throughput": row["throughput"], "parity_passed": parity,
            "top1_accuracy": top1, "accuracy_delta_points": 0.0, "task_passed": True,
            "samples_ms": row["samples_ms"]}


def test_the_same_figures_pass_and_every_compared_row_is_listed():
    base = bench(bench_row(), bench_row(batch=1, p50=20.0))
    gate = compare(base, bench(bench_row(seed=1), bench_row(batch=1, p50=20.0, seed=1)))
    assert gate.passed and [r.status for r in gate.rows] == ["ok", "ok"]
    d = gate.to_dict()
    assert d["outcome"] == "pass" and d["compared"] == 2 and d["regressed"] == 0 and d["inconclusive"] == 0
    assert d["rows"][0]["baseline_iterations"] == d["rows"][0]["current_iterations"] == 100
    lo, hi = d["rows"][0]["p50_ratio_ci95"]
    assert lo < 1 < hi < 1.05
    assert "PASS: 0 of 2 row(s) regressed, 0 inconclusive" in gate_text(d)


@pytest.mark.parametrize("slower, spread, drift, outcome", [
    (1.00, 0.02, 0.0, "ok"),            # the same distribution
    (1.02, 0.02, 0.0, "ok"),            # slower, but surely within 5 %
    (1.15, 0.02, 0.0, "regressed"),     # surely beyond 5 %
    (2.00, 0.30, 0.10, "regressed"),    # 2x on a busy machine: wide spread, drifting rounds, still caught
    (1.05, 0.05, 0.0, "inconclusive"),  # on the allowance: neither
    (1.10, 0.30, 0.10, "inconclusive"),  # beyond it, but the noise could explain it
])
def test_the_gate_has_three_outcomes_on_known_distributions(slower, spread, drift, outcome):
    old = bench_row(spread=spread, drift=drift)
    new = bench_row(p50=100.0 * slower, spread=spread, drift=drift, seed=7)
    gate = compare(bench(old), bench(new), max_slowdown=0.05)
    row = gate.rows[0]
    assert row.status == outcome and gate.outcome == {"ok": "pass", "regressed": "fail"}.get(outcome, outcome)
    if outcome == "regressed":
        assert row.p50_ratio_ci95[0] > 1.05 and row.reasons[0].startswith("p50 ")
        assert gate_failure(gate.to_dict()) == "regression against the baseline: onnxruntime fp32 batch 8"
        assert "REGRESSED" in gate_text(gate.to_dict())
    if outcome == "inconclusive":
        assert "straddles the allowance" in row.reasons[0]
        assert gate_failure(gate.to_dict()).startswith("inconclusive against the baseline")


def test_an_inconclusive_row_says_how_long_a_run_would_decide_it_and_that_run_does():
    old = bench_row(spread=0.2, n=200)  # a long baseline, a short and noisy run 15 % slower
    new = bench_row(p50=115.0, spread=0.2, n=2, seed=3)
    row = compare(bench(old), bench(new)).rows[0]
    assert row.status == "inconclusive" and row.seconds_to_decide is not None
    measured_s = sum(map(sum, new["samples_ms"]["rounds"])) / 1e3
    assert row.seconds_to_decide > measured_s and "bench --duration" in row.reasons[0]
    # The same machine, timed as long as the message says (calls scale with the seconds): now it is decided.
    n = int(np.ceil(2 * row.seconds_to_decide / measured_s * 1.5))
    longer = compare(bench(old), bench(bench_row(p50=115.0, spread=0.2, n=n, seed=4))).rows[0]
    assert longer.status == "regressed"


def test_a_baseline_too_noisy_to_decide_anything_says_so():
    old = bench_row(spread=0.05, drift=0.2)
    row = compare(bench(old), bench(bench_row(p50=110.0, spread=0.01, n=200, seed=3))).rows[0]
    assert row.status == "inconclusive" and "re-measure the baseline longer" in row.reasons[0]


def test_fewer_images_per_second_regress_even_at_the_same_p50():
    samples = rounds()
    slow_tail = [r[:-4] + [v * 3 for v in r[-4:]] for r in samples]  # the mean grows, the median barely moves
    gate = compare(bench(bench_row(samples=samples)), bench(bench_row(samples=slow_tail)))
    row = gate.rows[0]
    assert row.status == "regressed" and row.reasons[0].startswith("throughput 79.9 → 57.0 img/s")
    assert row.p50_ratio_ci95[1] < 1.05  # the median alone would have passed


def test_infinite_or_missing_figures_are_inconclusive_rather_than_crashing():
    old = bench_row()
    old["latency_ms"]["cv"] = "nan"  # how json_safe writes a NaN
    new = bench_row(p50=300.0)
    new["throughput"] = "inf"
    row = compare(bench(old), bench(new)).rows[0]
    assert row.status == "inconclusive" and "timing not compared" in row.reasons[0]
    unsampled = bench_row(samples=[])
    row = compare(bench(old), bench(unsampled)).rows[0]
    assert row.status == "inconclusive" and "this run has no per-call samples" in row.reasons[0]


def test_parity_that_passed_before_and_fails_now_regresses_even_when_noisy():
    gate = compare(bench(bench_row()), bench(bench_row(parity=False, spread=0.5)))
    assert not gate.passed and gate.rows[0].reasons[0] == "parity failed (it passed in the baseline)"
    assert compare(bench(bench_row(parity=False)), bench(bench_row(parity=False))).passed  # not new: not a regression
    assert compare(bench(bench_row(parity=None)), bench(bench_row(parity=False))).passed


@pytest.mark.parametrize("top1, budget, passed", [(0.95, 0.5, True), (0.946, 0.5, True), (0.94, 0.5, False),
                                                  (0.94, 1.0, True), (0.99, 0.0, True)])
def test_top1_lost_beyond_the_budget_regresses(top1, budget, passed):
    gate = compare(pipeline(pipeline_row()), pipeline(pipeline_row(top1=top1)), max_accuracy_drop=budget)
    assert gate.passed == passed
    if not passed:
        assert gate.rows[0].reasons == ("top-1 95.00% → 94.00% (−1.00 points, allowed 0.50)",)


def test_rows_in_one_report_only_are_listed_not_failed():
    gate = compare(bench(bench_row(), bench_row(batch=32, p50=300.0)),
                   bench(bench_row(seed=1), bench_row(runtime="torch")))
    assert gate.passed and len(gate.rows) == 1
    assert gate.only_in_baseline == ("onnxruntime fp32 batch 32",) and gate.only_in_current == ("torch fp32 batch 8",)
    assert "Only in the baseline (not compared): onnxruntime fp32 batch 32" in gate_text(gate.to_dict())
    nothing = compare(bench(bench_row(batch=1)), bench(bench_row(batch=2))).to_dict()
    assert nothing["passed"] and "nothing was compared" in gate_text(nothing)


def test_a_pipeline_baseline_gates_a_bench_run_and_the_other_way_round():
    old = pipeline(pipeline_row(precision="fp32", batch=8, p50=100.0), pipeline_row())
    gate = compare(old, bench(bench_row(p50=150.0)))
    assert [(r.runtime, r.precision, r.batch_size, r.status) for r in gate.rows] == [
        ("onnxruntime", "fp32", 8, "regressed")]
    assert gate.rows[0].top1_accuracy == (0.95, None)  # bench measures no top-1: not judged on it
    assert compare(bench(bench_row(p50=150.0)), old).rows[0].status == "ok"


def test_environment_changes_are_reported_next_to_the_verdict():
    env = {**ENV, "host": "b", "timestamp": "later", "threads": {"torch_intra_op": 1, "onnxruntime_intra_op": 1},
           "libraries": {"torch": "2.14.1", "onnxruntime": "1.32.0"}}
    gate = compare(bench(bench_row()), bench(bench_row(seed=1), env=env))
    assert gate.environment_changes == ("libraries.onnxruntime: 1.31.1 → 1.32.0", "threads.torch_intra_op: 2 → 1",
                                        "threads.onnxruntime_intra_op: 2 → 1")
    md = "\n".join(gate_markdown(gate.to_dict()))
    assert "## Regression gate" in md and "Environment differs from the baseline: libraries.onnxruntime" in md
    assert "same CPU, GPU, library versions and threads" in gate_text(compare(bench(), bench()).to_dict())


def test_a_slowdown_on_a_busier_machine_is_not_blamed_on_the_change():
    quiet = {**ENV, "load": {"other_processes_cpu_share": 0.01, "steal_share": 0.0}}
    busy = {**ENV, "load": {"other_processes_cpu_share": 0.34, "steal_share": 0.0}}
    gate = compare(bench(bench_row(), env=quiet), bench(bench_row(p50=220.0, seed=1), env=busy))
    row = gate.rows[0]
    assert row.status == "inconclusive" and gate.outcome == "inconclusive"
    assert "the machine was busier than for the baseline (other processes and steal 1% → 34%" in row.reasons[0]
    assert gate.environment_changes == ("load.other_processes_cpu_share: 0% → 30%",)
    # As busy as the baseline was (one core kept busy for both): the slowdown is the change's.
    assert compare(bench(bench_row(), env=busy), bench(bench_row(p50=220.0, seed=1), env=busy)).outcome == "fail"
    # A quieter machine now, or a parity loss, is never excused.
    assert compare(bench(bench_row(), env=busy), bench(bench_row(p50=220.0, seed=1), env=quiet)).outcome == "fail"
    lost = compare(bench(bench_row(), env=quiet), bench(bench_row(parity=False, seed=1), env=busy))
    assert lost.outcome == "fail"
    # A third of the CPUs taken explains a slowdown up to about 2.3x, not 10x.
    far = compare(bench(bench_row(), env=quiet), bench(bench_row(p50=1000.0, seed=1), env=busy))
    assert far.outcome == "fail" and "beyond what the busier machine explains" in far.rows[0].reasons[0]


def test_a_slowdown_on_a_slower_host_is_not_blamed_on_the_change():
    """Nothing in the process table, but the bench's reference computation (core.load.host_canary_ms) ran 20 %
    slower: another VM or a lower clock; the slowdown is not the change's. The same canary: it is."""
    def env(canary_ms: float) -> dict:
        return {**ENV, "load": {"other_processes_cpu_share": 0.01, "steal_share": 0.0,
                                "host_canary": {"p50_ms": canary_ms, "rounds_ms": [[canary_ms] * 3]}}}

    slower = compare(bench(bench_row(), env=env(8.0)), bench(bench_row(p50=130.0, seed=1), env=env(9.6)))
    row = slower.rows[0]
    assert row.status == "inconclusive" and "fixed reference computation 20% slower than for the baseline (8.00 → " \
        "9.60 ms)" in row.reasons[0]
    assert compare(bench(bench_row(), env=env(8.0)), bench(bench_row(p50=130.0, seed=1), env=env(8.2))).outcome \
        == "fail"
    # A canary that ran faster now excuses nothing; reports without one (older ones) are judged as before.
    assert compare(bench(bench_row(), env=env(8.0)), bench(bench_row(p50=130.0, seed=1), env=env(6.0))).outcome \
        == "fail"
    assert compare(bench(bench_row()), bench(bench_row(p50=130.0, seed=1), env=env(9.6))).outcome == "fail"
    # A host 6 % slower explains up to 13 % (its square), not 3x: that is the change's, whatever the canary says.
    far = compare(bench(bench_row(), env=env(8.0)), bench(bench_row(p50=300.0, seed=1), env=env(8.5)))
    assert far.outcome == "fail" and "beyond what the slower host explains (up to +18.5%)" in far.rows[0].reasons[0]


@pytest.mark.parametrize("report, message", [
    ([1, 2], "found no 'format' field"),
    ({"model": "m.onnx", "environment": {}, "results": []}, "a bench report from before reports carried a format"),
    ({"format": "alexnet-deploy/checkpoint"}, "found format 'alexnet-deploy/checkpoint'"),
    ({"format": BENCH_FORMAT, "format_version": 99, "results": []},
     f"format version 99, this toolkit reads version {BENCH_VERSION}"),
    ({"format": FORMAT, "format_version": 3, "rows": []}, f"format version 3, this toolkit reads version "
                                                          f"{FORMAT_VERSION}"),
    ({"format": FORMAT, "format_version": FORMAT_VERSION}, "lack the field 'rows'"),
    ({"format": BENCH_FORMAT, "format_version": BENCH_VERSION, "results": [{"runtime": "torch"}]}, "lack the field"),
    ({"format": BENCH_FORMAT, "format_version": BENCH_VERSION,
      "results": [bench_row(samples=[[1.0, -2.0]])]}, "hold something else"),
    ({"format": FORMAT, "format_version": FORMAT_VERSION, "rows": [{**pipeline_row(), "batch_size": "eight"}]},
     "hold something else"),
])
def test_a_baseline_that_is_not_a_readable_report_is_one_clear_usage_error(report, message):
    with pytest.raises(BaselineError, match="--baseline old.json: ") as e:
        check_baseline(report, "old.json")
    assert message in str(e.value) and isinstance(e.value, UsageError)  # the CLI exits 2


def test_load_baseline_reads_json_and_refuses_anything_else(tmp_path):
    good = tmp_path / "base.json"
    good.write_text(json.dumps(bench(bench_row())))
    assert load_baseline(good)["results"][0]["runtime"] == "onnxruntime"
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07\x12\x00\xff")
    with pytest.raises(BaselineError, match="not a readable JSON report"):
        load_baseline(bad)


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("0.05", 0.05), (" 30% ", 0.3), ("1", 1.0), ("999%", 9.99)])
def test_max_slowdown_takes_a_percentage_or_a_fraction(text, value):
    assert parse_slowdown(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "0%", "-5%", "10", "1000%", "nan", "inf", "nan%", "five", ""])
def test_max_slowdown_must_be_finite_above_0_and_below_10(text):
    with pytest.raises(UsageError, match="5% or 0.05|above 0 and below 10"):
        parse_slowdown(text)
