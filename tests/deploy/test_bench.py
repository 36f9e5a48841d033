"""The measurement harness and the bench report's structure (never its speed)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from deploy.progress import Progress
from deploy.bench.timing import BenchConfig, Cell, measure, measure_interleaved
from deploy.formats import BENCH_FORMAT_VERSION
from runtimes.ort_runtime import OrtRuntime
from deploy.bench.render import render_markdown, render_text
from deploy.bench.reports import LatencyStats
from core.errors import UsageError
from deploy.bench.bench import BenchPlan, run_bench

QUICK = BenchConfig(warmup_iters=2, iterations=6)
LATENCY_KEYS = {"p50", "p90", "p95", "p99", "mean", "min", "max", "std", "cv", "samples"}


class InterruptAfter(Progress):
    """Simulates Ctrl-C after ``n`` timed iterations."""

    def __init__(self, n: int) -> None:
        self.n, self.ended = n, False

    def step(self, done: int, elapsed_s: float) -> None:
        if done >= self.n:
            raise KeyboardInterrupt

    def end(self) -> None:
        self.ended = True


def test_measure_by_iterations(tiny_onnx):
    with OrtRuntime(tiny_onnx.path) as rt:
        m = measure(rt, {"input": tiny_onnx.case.sample(4)}, QUICK)
    assert (m.batch_size, len(m.host_ms), m.warmup_iters, m.device_ms, m.interrupted) == (4, 6, 2, None, False)
    assert all(t > 0 for t in m.host_ms) and m.first_call_ms > 0


def test_measure_by_duration_and_warmup_time(tiny_onnx):
    config = BenchConfig(warmup_iters=1, warmup_s=0.05, duration_s=0.1, min_iterations=3)
    with OrtRuntime(tiny_onnx.path) as rt:
        m = measure(rt, {"input": tiny_onnx.case.sample(1)}, config)
    assert len(m.host_ms) >= 3 and m.warmup_iters >= 1


def test_ctrl_c_keeps_what_was_measured(tiny_onnx):
    progress = InterruptAfter(3)
    with OrtRuntime(tiny_onnx.path) as rt:
        m = measure(rt, {"input": tiny_onnx.case.sample(1)}, BenchConfig(warmup_iters=0, iterations=100), progress)
    assert m.interrupted and len(m.host_ms) == 3 and progress.ended


class Recorded(OrtRuntime):
    """Real ONNX Runtime that notes the order of its timed calls (and can fail on its n-th one)."""

    def __init__(self, path, log: list, name: str, fail_at: int | None = None) -> None:
        super().__init__(path)
        self.log, self.tag, self.fail_at = log, name, fail_at

    def _run(self) -> None:
        self.log.append(self.tag)
        if self.fail_at is not None and self.log.count(self.tag) >= self.fail_at:
            from runtimes.errors import InferenceError

            raise InferenceError(f"{self.tag}: broke on call {self.fail_at}")
        super()._run()


def test_rounds_interleave_every_cell_and_a_failing_one_stops_alone(tiny_onnx):
    calls: list[str] = []
    config = BenchConfig(warmup_iters=1, iterations=6, rounds=3)
    with Recorded(tiny_onnx.path, calls, "A") as a, Recorded(tiny_onnx.path, calls, "B") as b, \
            Recorded(tiny_onnx.path, calls, "C", fail_at=4) as c:
        feeds = {"input": tiny_onnx.case.sample(2)}
        results = measure_interleaved([Cell(a, feeds, "A"), Cell(b, feeds, "B"), Cell(c, feeds, "C")], config)
    # One warm-up call each, then 3 rounds of 2 calls each: A A B B C C, A A B B C(fails), A A B B.
    assert calls == list("ABC") + list("AABBCC") + list("AABBC") + list("AABB")
    assert [len(m.rounds_ms) for m in results] == [3, 3, 2] and [len(m.host_ms) for m in results] == [6, 6, 2]
    assert results[0].error is None and results[2].error == "C: broke on call 4"


def test_each_row_has_its_intervals_and_samples(tiny_onnx):
    plan = BenchPlan(runtimes=("onnxruntime",), batch_sizes=(1, 2), timing=BenchConfig(warmup_iters=1,
                                                                                        iterations=20, rounds=4),
                     parity_samples=4)
    report = json.loads(json.dumps(run_bench(tiny_onnx.path, plan).to_dict()))
    assert report["format_version"] == BENCH_FORMAT_VERSION
    for r in report["results"]:
        rounds = r["samples_ms"]["rounds"]
        assert [len(x) for x in rounds] == [5, 5, 5, 5]
        assert r["p50_ci95"][0] <= r["latency_ms"]["p50"] <= r["p50_ci95"][1]
        assert r["throughput_ci95"][0] <= r["throughput"] <= r["throughput_ci95"][1]
    load = report["environment"]["load"]
    assert {"other_processes_cpu_share", "steal_share", "busy", "warning", "load_average_1min"} <= set(load)


def test_bench_config_validation():
    with pytest.raises(UsageError, match="iterations"):
        BenchConfig(iterations=0)
    for bad in (0, float("nan"), float("inf"), -1):  # a NaN or infinite duration would never end
        with pytest.raises(UsageError, match="duration"):
            BenchConfig(duration_s=bad)
    with pytest.raises(UsageError, match="warm-up"):
        BenchConfig(warmup_s=float("inf"))
    with pytest.raises(UsageError, match="rounds"):
        BenchConfig(rounds=0)


def test_latency_stats_are_ordered():
    stats = LatencyStats.from_samples(list(np.random.default_rng(0).gamma(2.0, 3.0, 200)))
    assert stats.min <= stats.p50 <= stats.p90 <= stats.p95 <= stats.p99 <= stats.max
    assert stats.min <= stats.mean <= stats.max and stats.cv == pytest.approx(stats.std / stats.mean)
    assert LatencyStats.from_samples([]) is None
    assert LatencyStats.from_samples([2.0]).cv == 0.0


@pytest.fixture(scope="module")
def tiny_report(tiny_onnx):
    config = BenchPlan(runtimes=("torch", "onnxruntime", "onnxruntime-cuda", "tensorrt"), batch_sizes=(1, 4),
                       timing=QUICK, parity_samples=8)
    return run_bench(tiny_onnx.path, config, reference=tiny_onnx.case.build)


def test_report_structure(tiny_report):
    d = json.loads(json.dumps(tiny_report.to_dict()))  # JSON-ready
    assert {"environment", "results", "reference", "parity", "cold_start", "skipped", "errors", "passed"} <= set(d)
    env = d["environment"]
    assert {"cpu", "gpu", "libraries", "threads", "allocator"} <= set(env)
    assert env["cpu"]["usable_cores"] >= 1 and env["libraries"]["onnxruntime"]
    assert d["reference"]["name"] == "torch" and d["passed"] is True
    ran = {(r["runtime"], r["batch_size"]) for r in d["results"]}
    assert {("torch", 1), ("torch", 4), ("onnxruntime", 1), ("onnxruntime", 4)} <= ran
    for r in d["results"]:
        lat = r["latency_ms"]
        assert LATENCY_KEYS <= set(lat) and lat["samples"] == 6 == r["iterations"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["throughput"] == pytest.approx(r["batch_size"] * 1e3 / lat["mean"])
        assert r["parity"]["passed"] and r["parity"]["reference"] == "torch"
        assert r["precision"] == "fp32" and r["vs_reference"] > 0
    assert all(r["vs_reference"] == 1.0 for r in d["results"] if r["runtime"] == "torch")
    for name in ("torch", "onnxruntime"):
        assert d["cold_start"][name]["load_ms"] > 0 and d["cold_start"][name]["first_inference_ms"] > 0
    check = d["parity"]["onnxruntime"]["checks"][0]
    assert check["inputs"] == "random" and check["samples"] == 8
    assert {"max_abs", "max_rel", "cosine", "top1_agreement"} <= set(check["outputs"][0])


def test_unavailable_runtimes_are_skipped_with_reasons(tiny_report):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert set(tiny_report.skipped) == {"onnxruntime-cuda", "tensorrt"}
    assert "pip install" in tiny_report.skipped["tensorrt"]


def test_renderings(tiny_report):
    text, md = render_text(tiny_report), render_markdown(tiny_report)
    for out in (text, md):
        assert "vs torch" in out and "PASS" in out and "cold start onnxruntime" in out
    assert md.count("\n| onnxruntime |") == 2


def test_without_checkpoint_the_reference_is_ort_cpu(tiny_onnx):
    config = BenchPlan(runtimes=("torch", "onnxruntime"), batch_sizes=(2,), timing=BenchConfig(1, iterations=2),
                       parity_samples=8)
    report = run_bench(tiny_onnx.path, config)
    assert report.reference["name"] == "onnxruntime" and "torch" in report.skipped
    assert "--reference" in report.skipped["torch"] and report.passed


def test_interrupted_bench_returns_partial_report(tiny_onnx):
    config = BenchPlan(runtimes=("onnxruntime", "torch"), batch_sizes=(1, 2), timing=BenchConfig(0, iterations=50),
                       parity_samples=8)
    report = run_bench(tiny_onnx.path, config, reference=tiny_onnx.case.build, progress=InterruptAfter(4))
    assert report.interrupted and not report.passed
    assert [(r.runtime, r.batch_size, r.interrupted) for r in report.results] == [("onnxruntime", 1, True)]
    assert report.results[0].latency_ms.samples == 4


def test_a_parity_failure_names_the_first_diverging_layer(tmp_path):
    """conv3's weight doubled in the ONNX file: the bench fails parity and says conv3 is where it starts."""
    import onnx
    from onnx import numpy_helper

    from tests.export.layer_graphs import shared_forms

    forms = shared_forms()
    model = onnx.load(str(forms.save("fp32-conv", tmp_path / "good.onnx")))
    for init in model.graph.initializer:
        if init.name == "features.conv3.weight":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 2, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    plan = BenchPlan(runtimes=("onnxruntime",), batch_sizes=(1,), timing=QUICK, parity_samples=4)
    report = run_bench(broken, plan, reference=lambda: forms.model)
    assert not report.passed
    failures = "\n".join(report.failures())
    assert "parity failed: " in failures and "first diverging layer: conv3 (onnxruntime fp32" in failures
    assert "pool2 before it" in failures
    assert report.to_dict()["parity"]["onnxruntime"]["first_divergence"].startswith("first diverging layer: conv3")
    assert "first diverging layer: conv3" in render_text(report)
