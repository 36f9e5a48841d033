"""The regression gate on synthetic bench and pipeline reports: slowdown, noise, parity, top-1, one-sided rows,
environment changes, baseline checks and the --max-slowdown parser."""
from __future__ import annotations

import json

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


def bench_row(runtime="onnxruntime", batch=8, p50=100.0, cv=0.01, parity=True, iterations=30, precision="fp32"):
    return {"runtime": runtime, "precision": precision, "batch_size": batch, "model": "m.onnx",
            "iterations": iterations, "latency_ms": {"p50": p50, "mean": p50, "cv": cv, "samples": iterations},
            "throughput": batch / p50 * 1e3, "parity": None if parity is None else {"passed": parity}}


def bench(*rows, env=ENV) -> dict:
    return {"format": BENCH_FORMAT, "format_version": BENCH_VERSION, "model": "m.onnx", "environment": env,
            "results": list(rows)}


def pipeline(*rows, env=ENV) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "out": "runs/x", "environment": env,
            "rows": list(rows)}


def pipeline_row(runtime="onnxruntime", precision="int8", batch=1, p50=10.0, cv=0.01, top1=0.95, parity=True):
    return {"runtime": runtime, "precision": precision, "batch_size": batch, "model": "m.onnx", "p50_ms": p50,
            "p99_ms": p50, "mean_ms": p50, "iterations": 50, "cv": cv, "throughput": batch / p50 * 1e3,
            "parity_passed": parity, "top1_accuracy": top1, "accuracy_delta_points": 0.0, "task_passed": True}


def test_the_same_figures_pass_and_every_compared_row_is_listed():
    gate = compare(bench(bench_row(), bench_row(batch=1, p50=20.0)), bench(bench_row(), bench_row(batch=1, p50=20.0)))
    assert gate.passed and [r.status for r in gate.rows] == ["ok", "ok"]
    d = gate.to_dict()
    assert d["passed"] and d["compared"] == 2 and d["regressed"] == 0 and d["not_judged"] == 0
    assert d["rows"][0]["baseline_iterations"] == d["rows"][0]["current_iterations"] == 30
    assert "PASS: 0 of 2 row(s) regressed" in gate_text(d)


@pytest.mark.parametrize("p50, status", [(104.9, "ok"), (105.1, "regressed"), (80.0, "ok"), (200.0, "regressed")])
def test_a_row_slower_than_allowed_regresses(p50, status):
    gate = compare(bench(bench_row()), bench(bench_row(p50=p50)), max_slowdown=0.05)
    assert gate.rows[0].status == status and gate.passed == (status == "ok")
    if status == "regressed":
        assert gate.rows[0].reasons[0].startswith("p50 100.00 → ")
        assert gate_failure(gate.to_dict()) == "regression against the baseline: onnxruntime fp32 batch 8"
        assert "REGRESSED" in gate_text(gate.to_dict())


def test_fewer_images_per_second_regress_even_at_the_same_p50():
    current = bench_row()
    current["throughput"] /= 1.2  # the mean grew (a slow tail) while the median stayed
    gate = compare(bench(bench_row()), bench(current))
    assert gate.rows[0].status == "regressed" and gate.rows[0].reasons[0].startswith("throughput 80.0 → 66.7")


@pytest.mark.parametrize("old_cv, new_cv", [(0.08, 0.01), (0.01, 0.08), (0.01, None)])
def test_a_noisy_row_is_not_judged_and_not_failed(old_cv, new_cv):
    gate = compare(bench(bench_row(cv=old_cv)), bench(bench_row(p50=200.0, cv=new_cv)), max_slowdown=0.05)
    row = gate.rows[0]
    assert gate.passed and row.status == "not judged"
    assert "timing not judged" in row.reasons[0] and "allowed slowdown 5.0%" in row.reasons[0]
    assert gate.to_dict()["not_judged"] == 1
    # A looser allowance judges it (a CV of 8 % is below 10 %): 2x slower fails.
    if new_cv is not None:
        assert compare(bench(bench_row(cv=old_cv)), bench(bench_row(p50=200.0, cv=new_cv)), 0.10).rows[0].status \
            == "regressed"


def test_infinite_or_missing_figures_are_not_judged_rather_than_crashing():
    old = bench_row()
    old["latency_ms"]["cv"] = "nan"  # how json_safe writes a NaN
    new = bench_row(p50=300.0)
    new["throughput"] = "inf"
    row = compare(bench(old), bench(new)).rows[0]
    assert row.status == "not judged" and row.reasons == ("timing missing on one side",)


def test_parity_that_passed_before_and_fails_now_regresses_even_when_noisy():
    gate = compare(bench(bench_row()), bench(bench_row(parity=False, cv=0.5)))
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
    gate = compare(bench(bench_row(), bench_row(batch=32, p50=300.0)), bench(bench_row(), bench_row(runtime="torch")))
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
    gate = compare(bench(bench_row()), bench(bench_row(), env=env))
    assert gate.environment_changes == ("libraries.onnxruntime: 1.31.1 → 1.32.0", "threads.torch_intra_op: 2 → 1",
                                        "threads.onnxruntime_intra_op: 2 → 1")
    md = "\n".join(gate_markdown(gate.to_dict()))
    assert "## Regression gate" in md and "Environment differs from the baseline: libraries.onnxruntime" in md
    assert "same CPU, GPU, library versions and threads" in gate_text(compare(bench(), bench()).to_dict())


@pytest.mark.parametrize("report, message", [
    ([1, 2], "found no 'format' field"),
    ({"model": "m.onnx", "environment": {}, "results": []}, "a bench report from before reports carried a format"),
    ({"format": "alexnet-deploy/checkpoint"}, "found format 'alexnet-deploy/checkpoint'"),
    ({"format": BENCH_FORMAT, "format_version": 99, "results": []}, "format version 99, this toolkit reads version 1"),
    ({"format": FORMAT, "format_version": 2, "rows": []}, f"format version 2, this toolkit reads version "
                                                          f"{FORMAT_VERSION}"),
    ({"format": FORMAT, "format_version": FORMAT_VERSION}, "lack the field 'rows'"),
    ({"format": BENCH_FORMAT, "format_version": 1, "results": [{"runtime": "torch"}]}, "lack the field"),
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
