"""`cli.py bench` in-process: help, exit codes, report files, the parity-failure path and Ctrl-C."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from runtimes.registry import RUNTIME_NAMES, availability

onnx = pytest.importorskip("onnx")
QUICK = ["--batch-sizes", "1", "--iterations", "2", "--warmup", "1", "--parity-samples", "8"]


def invoke(*args: str):
    return CliRunner().invoke(cli.main, ["bench", *map(str, args)], catch_exceptions=False)


def test_help_lists_every_runtime():
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Benchmark an ONNX model" in result.output
    for name in RUNTIME_NAMES:
        assert name in result.output


def test_runtimes_take_a_comma_separated_list_of_registry_names(tiny_onnx):
    result = invoke(tiny_onnx.path, "--runtime", "onnxruntime,tvm")
    assert result.exit_code == 2 and "tvm" in result.output
    assert all(name in result.output for name in RUNTIME_NAMES)  # the message lists the valid names
    assert invoke(tiny_onnx.path, "--runtime", "onnxruntime,onnxruntime").exit_code == 2  # twice
    ok = invoke(tiny_onnx.path, "--runtimes", "onnxruntime,onnxruntime-cuda" if availability("onnxruntime-cuda")[0]
                else "onnxruntime", *QUICK)
    assert ok.exit_code == 0, ok.output


def test_missing_model_file_is_a_usage_error(tmp_path):
    result = invoke(tmp_path / "nope.onnx")
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.parametrize("args, match", [
    (["--batch-sizes", "1,x"], "comma-separated integers"),
    (["--batch-sizes", "0"], "1..256"),
    (["--batch-sizes", "100000"], "1..256"),     # would need ~60 GB for its inputs alone
    (["--duration", "nan"], "nan"),              # a NaN or infinite duration would never end
    (["--duration", "inf"], "inf"),
    (["--warmup", "infs"], "iterations (5) or seconds"),
    (["--warmup", "soon"], "iterations (5) or seconds up to an hour (2s)"),
    (["--iterations", "3", "--duration", "1"], "not both"),
])
def test_bad_options(tiny_onnx, args, match):
    result = invoke(tiny_onnx.path, *args)
    assert result.exit_code == 2 and match in result.output


@pytest.mark.parametrize("name", ["onnxruntime-cuda", "tensorrt"])
def test_unavailable_runtime_exits_3_with_the_fix(tiny_onnx, name):
    ok, _ = availability(name)
    if ok:
        pytest.skip(f"{name} is available here")
    result = CliRunner().invoke(cli.main, ["bench", str(tiny_onnx.path), "--runtime", name, *QUICK])
    assert result.exit_code == 3, result.output
    assert f"Error: {name}: " in result.output
    assert ("pip install" in result.output) or ("no CUDA GPU" in result.output)


def test_torch_without_a_checkpoint_fails_clearly(tiny_onnx):
    result = CliRunner().invoke(cli.main, ["bench", str(tiny_onnx.path), "--runtime", "torch", *QUICK])
    assert result.exit_code == 1 and "--reference RUN" in result.output


def test_bench_all_writes_json_and_markdown(alexnet_run, tmp_path):
    out_json, out_md = tmp_path / "r" / "bench.json", tmp_path / "bench.md"
    result = invoke(alexnet_run.onnx_path, "--runtime", "all", *QUICK, "--json", out_json, "--markdown", out_md)
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert report["passed"] and report["reference"]["name"] == "torch"
    assert report["reference"]["model"] == str(alexnet_run.weights)
    assert all(r["model"] == str(alexnet_run.onnx_path) for r in report["results"] if r["runtime"] != "torch")
    assert {r["runtime"] for r in report["results"]} >= {"torch", "onnxruntime"}
    kinds = {c["inputs"] for c in report["parity"]["onnxruntime"]["checks"]}
    assert kinds == {"random", "images"}  # the metadata's data folder gives real-image parity
    assert "| onnxruntime | fp32 | 1 |" in out_md.read_text()
    assert "PASS onnxruntime vs torch (images, n=8)" in result.output


@pytest.fixture(scope="module")
def perturbed_onnx(alexnet_run, tmp_path_factory):
    """The AlexNet export with its last layer's weights scaled: same metadata, so bench compares it with the
    original checkpoint."""
    from onnx import numpy_helper

    model = onnx.load(str(alexnet_run.onnx_path))
    weight = max(model.graph.initializer, key=lambda t: ("fc8" in t.name and "weight" in t.name, t.name))
    array = numpy_helper.to_array(weight)
    weight.CopyFrom(numpy_helper.from_array((array * 1.5 + 0.01).astype(np.float32), weight.name))
    path = tmp_path_factory.mktemp("perturbed") / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_parity_miss_exits_nonzero_after_the_report(perturbed_onnx, tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli.main, ["bench", str(perturbed_onnx), "--runtime", "onnxruntime", *QUICK,
                                           "--images", "0", "--json", str(out)])
    assert result.exit_code == 1, result.output
    assert "FAIL onnxruntime vs torch (random" in result.output   # the report is printed first
    assert "Error: parity failed" in result.output and "exceed atol" in result.output
    report = json.loads(out.read_text())
    assert not report["passed"] and not report["results"][0]["parity"]["passed"]


def test_ctrl_c_prints_partial_results_and_exits_130(tiny_onnx, tmp_path, monkeypatch):
    from deploy.progress import Progress

    class CtrlC(Progress):
        def step(self, done: int, elapsed_s: float) -> None:
            if done >= 2:
                raise KeyboardInterrupt

    import deploy.progress

    monkeypatch.setattr(deploy.progress, "progress_for", lambda enabled: CtrlC())
    out = tmp_path / "partial.json"
    result = CliRunner().invoke(cli.main, ["bench", str(tiny_onnx.path), "--runtime", "onnxruntime",
                                           "--iterations", "50", "--json", str(out)])
    assert result.exit_code == 130, result.output
    assert "onnxruntime (partial)" in result.output and "Interrupted" in result.output
    assert json.loads(out.read_text())["interrupted"] is True


@pytest.mark.parametrize("args, match", [
    (["--max-slowdown", "nan"], "above 0 and below 10"),
    (["--max-slowdown", "0"], "above 0 and below 10"),
    (["--max-slowdown", "10"], "above 0 and below 10"),
    (["--max-slowdown", "fast"], "5% or 0.05"),
    (["--max-accuracy-drop", "nan"], "top-1 points from 0 to 100"),
    (["--max-accuracy-drop", "-1"], "top-1 points from 0 to 100"),
])
def test_bad_gate_options_are_usage_errors(tiny_onnx, args, match):
    result = invoke(tiny_onnx.path, *args)
    assert result.exit_code == 2 and match in result.output


@pytest.mark.parametrize("content, match", [
    ("not json", "not a readable JSON report"),
    ('{"format": "alexnet-deploy/bench-report", "format_version": 0, "results": []}', "format version 0"),
    ('{"model": "m.onnx", "environment": {}, "results": []}', "from before reports carried a format"),
])
def test_a_baseline_that_is_not_a_report_fails_before_anything_runs(tiny_onnx, tmp_path, content, match):
    baseline = tmp_path / "base.json"
    baseline.write_text(content)
    result = invoke(tiny_onnx.path, "--runtime", "onnxruntime", *QUICK, "--baseline", baseline)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: --baseline {baseline}: ") and match in result.output
    assert result.output.count("\n") == 1  # one line: nothing was benched


def test_the_baseline_is_not_overwritten_by_the_report(tiny_onnx, tmp_path):
    baseline = tmp_path / "base.json"
    assert invoke(tiny_onnx.path, "--runtime", "onnxruntime", *QUICK, "--json", baseline).exit_code == 0
    before = baseline.read_bytes()
    assert json.loads(before)["format"] == "alexnet-deploy/bench-report"
    result = invoke(tiny_onnx.path, "--runtime", "onnxruntime", *QUICK, "--baseline", baseline, "--json", baseline)
    assert result.exit_code == 2 and "the baseline" in result.output and baseline.read_bytes() == before


def test_an_inconclusive_row_exits_4_unless_the_policy_passes_it(tiny_onnx, tmp_path):
    """A baseline whose own calls spread from a fifth to five times its median: no run of the same command (within
    2x of it) can be judged against it."""
    steady = ["--runtime", "onnxruntime", "--batch-sizes", "1", "--iterations", "50", "--warmup", "20",
              "--parity-samples", "8"]
    baseline = tmp_path / "base.json"
    assert invoke(tiny_onnx.path, *steady, "--json", baseline).exit_code == 0
    report = json.loads(baseline.read_text())
    for row in report["results"]:
        p50 = row["latency_ms"]["p50"]
        row["samples_ms"]["rounds"] = [[p50 / 5, p50, p50 * 5] for _ in row["samples_ms"]["rounds"]]
    baseline.write_text(json.dumps(report))
    result = invoke(tiny_onnx.path, *steady, "--baseline", baseline)
    assert result.exit_code == 4, result.output
    assert "Regression gate: INCONCLUSIVE" in result.output and "re-measure the baseline longer" in result.output
    assert "Error: inconclusive against the baseline" in result.output and "Traceback" not in result.output
    lenient = invoke(tiny_onnx.path, *steady, "--baseline", baseline, "--inconclusive", "pass")
    assert lenient.exit_code == 0 and "passed by --inconclusive pass" in lenient.output, lenient.output


# The gate on real runs: AlexNet on ONNX Runtime at batch 8, 3 s per run (a 2-core machine times ~15-30 calls).
GATE = ["--runtime", "onnxruntime", "--batch-sizes", "8", "--duration", "3", "--warmup", "1s",
        "--parity-samples", "8", "--images", "8"]


@pytest.fixture(scope="module")
def gate_baseline(alexnet_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("gate") / "base.json"
    result = invoke(alexnet_run.onnx_path, *GATE, "--json", path)
    assert result.exit_code == 0, result.output
    return path


def test_the_same_settings_never_fail_the_gate(gate_baseline, alexnet_run, tmp_path):
    """The same command again: ok, or inconclusive when the machine's noise hides a 5 % difference; never a
    regression (exit 1), whatever this shared machine is doing."""
    out, md = tmp_path / "again.json", tmp_path / "again.md"
    result = invoke(alexnet_run.onnx_path, *GATE, "--baseline", gate_baseline, "--json", out, "--markdown", md)
    gate = json.loads(out.read_text())["gate"]
    (row,) = gate["rows"]
    assert (row["runtime"], row["precision"], row["batch_size"]) == ("onnxruntime", "fp32", 8)
    assert row["baseline_iterations"] >= 5 and row["current_iterations"] >= 5
    assert "## Regression gate" in md.read_text() and "Regression gate: " in result.output
    assert row["status"] in ("ok", "inconclusive") and result.exit_code == {"ok": 0, "inconclusive": 4}[row["status"]]
    if row["status"] == "inconclusive":
        assert "Error: inconclusive against the baseline" in result.output


def test_one_thread_instead_of_two_fails_the_gate_naming_the_row(gate_baseline, alexnet_run, tmp_path):
    from core.host import usable_cores

    if usable_cores() < 2:
        pytest.skip("one core: --threads 1 is what the baseline ran with")
    out = tmp_path / "one-thread.json"
    result = invoke(alexnet_run.onnx_path, *GATE, "--threads", "1", "--baseline", gate_baseline, "--json", out)
    gate = json.loads(out.read_text())["gate"]
    (row,) = gate["rows"]
    assert "threads.onnxruntime_intra_op: " in result.output  # the environment change is reported with the verdict
    if row["status"] == "inconclusive":  # never a pass: it says how long a run would decide it, or that the
        # machine was busier than for the baseline (a slowdown then may be the neighbours')
        assert result.exit_code == 4, result.output
        assert "would decide it" in result.output or re.search(r"as (quiet|fast) as for the baseline",
                                                               result.output), result.output
        pytest.skip(f"undecided on this machine at this duration: {row['reasons']}")
    assert result.exit_code == 1, result.output
    assert row["status"] == "regressed" and not gate["passed"]
    assert "Error: regression against the baseline: onnxruntime fp32 batch 8" in result.output
    assert "REGRESSED" in result.output  # the table on stdout
