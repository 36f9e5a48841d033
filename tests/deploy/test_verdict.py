"""The deployment verdict on synthetic report rows: the accuracy budget, ties, nothing qualifying, skipped runtimes,
no PyTorch row; and report.md opening with it."""
from __future__ import annotations

from pathlib import Path

import pytest

from deploy.pipeline.report import PipelineRecord, render_markdown
from deploy.bench.verdict import recommend

FIELDS = {"objective", "runtime", "precision", "batch_size", "model", "sha256", "value", "unit",
          "speedup_vs_torch_fp32", "accuracy_delta_points", "runner_up", "ci95", "tied_with", "tie_break",
          "detail"}
FILES = {"torch": "run/model.safetensors", "fp32": "onnx/model.fp32.onnx", "fp16": "onnx/model.fp16.onnx",
         "int8": "onnx/model.int8.onnx"}


def row(runtime: str, precision: str, batch: int, p50: float, throughput: float | None = None, delta: float = 0.0,
        parity: bool | None = True, p99: float | None = None, top1: bool = True, noise: float | None = None) -> dict:
    """One pipeline report row; img/s defaults to batch / p50; ``noise``: the relative half-width of its 95 %
    intervals (None: no intervals, as in reports without samples)."""
    tp = throughput or batch / p50 * 1e3
    intervals = {} if noise is None else {"p50_ci95": [p50 * (1 - noise), p50 * (1 + noise)],
                                          "throughput_ci95": [tp * (1 - noise), tp * (1 + noise)]}
    return {**intervals, "runtime": runtime, "precision": precision, "batch_size": batch,
            "model": FILES["torch" if runtime == "torch" else precision], "p50_ms": p50,
            "p99_ms": p99 if p99 is not None else p50 * 1.2, "throughput": tp,
            "parity_passed": parity, "parity": {} if parity is None else {"random": parity},
            "top1_accuracy": 0.9 + delta / 100 if top1 else None, "accuracy_delta_points": delta if top1 else None}


def report(rows: list[dict], runtimes: dict | None = None, skipped: list | None = None) -> dict:
    artifacts = [{"kind": "checkpoint" if k == "torch" else "onnx", "path": path, "sha256": f"sha-{k}"}
                 for k, path in FILES.items()]
    return {"rows": rows, "artifacts": artifacts, "runtimes": runtimes or {}, "skipped": skipped or []}


# The demo's shape: torch, onnxruntime fp32 and int8 at batch 1 and 32 (README's numbers).
DEMO = [row("torch", "fp32", 1, 21.44), row("torch", "fp32", 32, 319.0),
        row("onnxruntime", "fp32", 1, 14.55), row("onnxruntime", "fp32", 32, 265.0),
        row("onnxruntime", "int8", 1, 4.99, delta=-0.35), row("onnxruntime", "int8", 32, 110.0, delta=-0.35)]


def test_the_fastest_row_within_budget_wins_each_objective_with_its_file_and_speedup():
    rec = recommend(report(DEMO)).to_dict()
    latency, throughput = rec["latency"], rec["throughput"]
    assert set(latency) == set(throughput) == FIELDS
    assert (latency["runtime"], latency["precision"], latency["batch_size"]) == ("onnxruntime", "int8", 1)
    assert latency["model"] == "onnx/model.int8.onnx" and latency["sha256"] == "sha-int8"
    assert latency["value"] == 4.99 and latency["unit"] == "ms" and latency["accuracy_delta_points"] == -0.35
    assert latency["speedup_vs_torch_fp32"] == pytest.approx(21.44 / 4.99)
    assert latency["runner_up"]["runtime"] == "onnxruntime" and latency["runner_up"]["precision"] == "fp32"
    assert set(latency["runner_up"]) == FIELDS - {"runner_up"}
    assert latency["ci95"] is None and latency["tied_with"] == [] and latency["tie_break"] is None
    assert (throughput["batch_size"], throughput["unit"]) == (32, "img/s")
    assert throughput["value"] == pytest.approx(32 / 110e-3)
    assert throughput["speedup_vs_torch_fp32"] == pytest.approx(319 / 110)
    assert rec["unmet"] == {} and rec["excluded"] == [] and rec["not_measured"] == []


def test_the_torch_rows_name_the_checkpoint():
    rec = recommend(report([row("torch", "fp32", 1, 10.0), row("onnxruntime", "fp32", 1, 20.0)])).to_dict()
    assert rec["latency"]["model"] == "run/model.safetensors" and rec["latency"]["sha256"] == "sha-torch"
    assert rec["latency"]["speedup_vs_torch_fp32"] == 1.0


@pytest.mark.parametrize("delta, budget, eligible", [
    (-0.35, 0.5, True), (-0.5, 0.5, True),       # at the budget is within it
    (-0.69, 0.5, False), (-0.69, 1.0, True), (-0.01, 0.0, False), (+0.3, 0.0, True)])
def test_the_accuracy_budget_is_in_top1_points_against_pytorch_fp32(delta, budget, eligible):
    rows = [row("torch", "fp32", 1, 20.0), row("onnxruntime", "int8", 1, 5.0, delta=delta)]
    rec = recommend(report(rows), max_accuracy_drop=budget).to_dict()
    assert rec["max_accuracy_drop_points"] == budget
    assert rec["latency"]["precision"] == ("int8" if eligible else "fp32")
    if not eligible:
        assert rec["excluded"] == [{"runtime": "onnxruntime", "precision": "int8",
                                    "reason": f"top-1 {delta:+.2f} points vs PyTorch fp32, beyond the "
                                              f"{budget:.2f}-point budget"}]


def test_a_parity_miss_or_missing_task_parity_disqualifies_with_the_reason():
    rows = [row("torch", "fp32", 1, 20.0), row("onnxruntime", "fp32", 1, 3.0, parity=False),
            row("onnxruntime", "fp16", 1, 4.0, top1=False), row("onnxruntime", "int8", 1, 5.0, parity=None)]
    rec = recommend(report(rows)).to_dict()
    assert rec["latency"]["runtime"] == "torch" and rec["latency"]["runner_up"] is None
    reasons = {e["precision"]: e["reason"] for e in rec["excluded"]}
    assert reasons == {"fp32": "parity failed (random)", "int8": "no parity check",
                       "fp16": "no task-level parity (top-1 on the validation images not measured)"}


def test_nothing_qualifies_says_so_and_why():
    rows = [row("onnxruntime", "int8", 1, 5.0, delta=-2.0), row("onnxruntime", "int8", 8, 30.0, delta=-2.0)]
    rec = recommend(report(rows)).to_dict()
    assert rec["latency"] is None and rec["throughput"] is None
    assert rec["unmet"]["latency"].startswith("no row at batch 1 passed parity within 0.50 top-1 points")
    assert "batch 8" in rec["unmet"]["throughput"]
    assert recommend(report([])).to_dict()["unmet"] == {"latency": "no row was measured",
                                                        "throughput": "no row was measured"}


def test_ties_go_to_accuracy_then_p99_then_registry_order_then_precision_order():
    def winner(*rows):
        choice = recommend(report(list(rows))).to_dict()["latency"]
        return choice["runtime"], choice["precision"]

    assert winner(row("onnxruntime", "fp32", 1, 5.0, delta=-0.2),
                  row("onnxruntime", "int8", 1, 5.0, delta=0.1)) == ("onnxruntime", "int8")
    assert winner(row("onnxruntime", "fp32", 1, 5.0, p99=9.0),
                  row("onnxruntime", "fp16", 1, 5.0, p99=7.0)) == ("onnxruntime", "fp16")
    assert winner(row("onnxruntime", "fp32", 1, 5.0, p99=7.0),
                  row("torch", "fp32", 1, 5.0, p99=7.0)) == ("torch", "fp32")
    assert winner(row("onnxruntime", "int8", 1, 5.0, p99=7.0),
                  row("onnxruntime", "fp16", 1, 5.0, p99=7.0)) == ("onnxruntime", "fp16")
    # Throughput ties too, in any row order.
    a, b = row("onnxruntime", "int8", 8, 40.0, delta=-0.1), row("onnxruntime", "fp16", 8, 40.0)
    for rows in ([a, b], [b, a]):
        assert recommend(report(rows)).to_dict()["throughput"]["precision"] == "fp16"


def test_rows_within_measurement_noise_are_a_tie_broken_by_accuracy_then_the_simpler_runtime():
    rows = [row("torch", "fp32", 32, 300.0, noise=0.01),
            row("openvino", "int8", 32, 74.0, delta=-0.2, noise=0.03),      # the fastest figure
            row("onnxruntime", "int8", 32, 75.0, delta=-0.2, noise=0.03),   # as accurate, overlapping, simpler
            row("openvino", "fp32", 32, 150.0, noise=0.03)]                 # far slower: no tie
    c = recommend(report(rows)).to_dict()["throughput"]
    assert (c["runtime"], c["precision"]) == ("onnxruntime", "int8")
    assert c["tied_with"] == ["openvino int8"] and c["tie_break"] == "a simpler runtime than openvino int8"
    assert c["ci95"] == pytest.approx([32e3 / 75 * 0.97, 32e3 / 75 * 1.03])
    assert (c["runner_up"]["runtime"], c["runner_up"]["precision"]) == ("openvino", "int8")  # the next, not a repeat
    # Accuracy comes first: the faster, less simple row wins when the other lost top-1.
    rows[2] = row("onnxruntime", "int8", 32, 75.0, delta=-0.3, noise=0.03)
    assert recommend(report(rows)).to_dict()["throughput"]["runtime"] == "openvino"
    # Intervals that do not overlap: the faster row wins, whatever the tie rule would say.
    rows[2] = row("onnxruntime", "int8", 32, 90.0, delta=-0.2, noise=0.03)
    c = recommend(report(rows)).to_dict()["throughput"]
    assert c["runtime"] == "openvino" and c["tied_with"] == []


def test_the_tie_and_the_interval_are_in_the_rendered_verdict():
    from deploy.bench.render import verdict_lines

    rows = [row("torch", "fp32", 1, 20.0, noise=0.02), row("onnxruntime", "int8", 1, 5.0, noise=0.05),
            row("openvino", "int8", 1, 4.9, noise=0.05)]
    text = "\n".join(verdict_lines(recommend(report(rows)).to_dict()))
    assert "**onnxruntime int8**" in text and "5.00 ms (95% CI 4.75–5.25)" in text
    assert "Tie within measurement noise with openvino int8 (overlapping 95% intervals): chosen for a simpler " \
           "runtime than openvino int8." in text


def capacity_row(runtime: str, precision: str, qps: float | None, valid: bool = True) -> dict:
    return {"runtime": runtime, "precision": precision, "model": FILES["torch" if runtime == "torch" else precision],
            "sha256": None, "server_max_qps": qps, "server_p99_ms": 40.0, "valid": valid,
            "config": {"max_batch": 16, "queue_delay_us": 2000, "executors": 2, "threads": 1},
            "probe_above": {"target_qps": (qps or 0) * 1.08, "p99_ms": 70.0, "valid": True},
            "offline_samples_per_s": (qps or 0) * 1.1, "loadgen_summary": f"trials/{runtime}/summary.txt"}


def test_capacity_is_a_third_objective_when_measured_with_the_same_eligibility():
    rows = DEMO + [row("openvino", "int8", 1, 4.5, delta=-0.9), row("openvino", "int8", 32, 80.0, delta=-0.9)]
    capacity = {"slo_ms": 50.0, "results": [
        capacity_row("torch", "fp32", 90.0), capacity_row("onnxruntime", "fp32", 110.0),
        capacity_row("onnxruntime", "int8", 260.0), capacity_row("openvino", "int8", 400.0),  # beyond the budget
        capacity_row("onnxruntime", "fp16", 500.0, valid=False)]}                               # not a VALID answer
    rec = recommend({**report(rows), "capacity": capacity}).to_dict()
    c = rec["capacity"]
    assert set(c) == FIELDS and (c["runtime"], c["precision"], c["unit"]) == ("onnxruntime", "int8", "QPS")
    assert c["value"] == 260.0 and c["speedup_vs_torch_fp32"] == pytest.approx(260 / 90) and c["batch_size"] == 16
    assert c["detail"]["slo_ms"] == 50.0 and c["detail"]["probe_above"]["target_qps"] == pytest.approx(280.8)
    assert (c["runner_up"]["runtime"], c["runner_up"]["precision"]) == ("onnxruntime", "fp32")
    # Without a capacity measurement the verdict has no such key; with one that nothing met, it says why.
    assert "capacity" not in recommend(report(rows)).to_dict()
    none = recommend({**report(rows), "capacity": {"slo_ms": 5.0, "results": [capacity_row("torch", "fp32", None,
                                                                                             valid=False)]}})
    assert none.to_dict()["capacity"] is None and "p99 <= 5 ms" in none.unmet["capacity"]


def test_the_capacity_pick_is_rendered_with_its_evidence():
    from deploy.bench.render import verdict_lines

    capacity = {"slo_ms": 50.0, "results": [capacity_row("onnxruntime", "int8", 260.0)]}
    text = "\n".join(verdict_lines(recommend({**report(DEMO), "capacity": capacity}).to_dict()))
    assert "**Most requests per second under the latency SLO** (p99 <= 50 ms): **onnxruntime int8**" in text
    assert "260.0 QPS (LoadGen Server VALID at p99 40.00 ms; batch <= 16, delay 2000 us, 2 x 1 thread; 280.8 QPS " \
           "failed (p99 70.00 ms))" in text


def test_skipped_runtimes_and_pairs_are_listed_as_not_measured():
    runtimes = {"torch": {"status": "ran", "reason": ""}, "onnxruntime": {"status": "ran", "reason": ""},
                "onnxruntime-cuda": {"status": "skipped", "reason": "no CUDA GPU"},
                "tensorrt": {"status": "skipped", "reason": "not installed"}}
    skipped = [{"runtime": "onnxruntime", "precision": "bf16", "reason": "this CPU has no native bf16"}]
    rec = recommend(report(DEMO, runtimes, skipped)).to_dict()
    assert rec["not_measured"] == [
        {"runtime": "onnxruntime-cuda", "precision": None, "status": "skipped", "reason": "no CUDA GPU"},
        {"runtime": "tensorrt", "precision": None, "status": "skipped", "reason": "not installed"},
        {"runtime": "onnxruntime", "precision": "bf16", "status": "skipped", "reason": "this CPU has no native bf16"}]
    assert rec["latency"]["runtime"] == "onnxruntime"  # the verdict itself is unchanged


def test_without_a_torch_row_the_speedup_is_none_and_said():
    rows = [r for r in DEMO if r["runtime"] != "torch"]
    rec = recommend(report(rows)).to_dict()
    assert rec["latency"]["speedup_vs_torch_fp32"] is None and rec["throughput"]["speedup_vs_torch_fp32"] is None
    assert rec["latency"]["runner_up"]["speedup_vs_torch_fp32"] is None
    assert "no torch fp32 row at batch 1: the latency speedup is unknown" in rec["notes"]


def test_without_batch_1_latency_is_judged_at_the_smallest_batch_and_said():
    rows = [r for r in DEMO if r["batch_size"] == 32] + [row("onnxruntime", "fp32", 8, 60.0)]
    rec = recommend(report(rows)).to_dict()
    assert rec["latency"]["batch_size"] == 8 and rec["throughput"]["batch_size"] == 32
    assert any("batch 1 was not measured; judged at batch 8" in n for n in rec["notes"])


def test_report_md_opens_with_the_recommendation(tmp_path: Path):
    record = PipelineRecord(tmp_path, {"max_accuracy_drop": 1.0})
    record.runtimes["tensorrt"] = {"status": "skipped", "reason": "TensorRT is not installed"}
    report = record.to_dict()
    assert list(report)[:8] == ["format", "format_version", "status", "out", "failures", "interrupted_during",
                                "recommendation", "gate"]
    assert report["recommendation"]["max_accuracy_drop_points"] == 1.0
    md = render_markdown(report)
    assert md.startswith("# Deployment report\n\n## Recommendation\n\n- **Lowest latency**: nothing to recommend: "
                         "no row was measured.")
    assert "Not measured here: tensorrt — TensorRT is not installed" in md
    assert md.index("## Recommendation") < md.index("Result: **") < md.index("## Results")
