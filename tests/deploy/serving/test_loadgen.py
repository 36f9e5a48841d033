"""Real MLPerf LoadGen runs on a tiny model (a few seconds): LoadGen's own verdict and logs per run, its early-stopping
rule as sizing.py computes it, and a whole capacity search through the CLI."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from core.onnx_file import read_onnx_info
from deploy.serving.executors import Executors, Layout, ServingConfig, ServingTarget
from deploy.serving.report import NOT_MLPERF
from deploy.serving.sizing import passing_queries, server_queries, stream_queries
from deploy.serving.trials import TrialSettings, read_responses, run_trial, serve
from tests.helpers import make_pooling_classifier

pytest.importorskip("mlperf_loadgen")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_pooling_classifier(tmp_path_factory.mktemp("loadgen") / "m.onnx", ["a", "b", "c", "d"])


def test_sizing_matches_loadgens_rule():
    # LoadGen's own numbers: 459 queries with none over the target (p99), 64 (SingleStream p90), 662 (p99).
    assert (passing_queries(0), stream_queries(0.9), stream_queries(0.99)) == (459, 64, 662)
    assert server_queries(0.0) == 459 and 2000 < server_queries(0.005) < 2300
    with pytest.raises(ValueError):
        server_queries(0.01)


def test_a_short_server_run_is_invalid_by_early_stopping_as_computed(model, tmp_path):
    x = np.random.default_rng(0).standard_normal((16, 3, 227, 227), dtype=np.float32)
    executors = Executors(ServingTarget("onnxruntime", model, read_onnx_info(model)), Layout(1, 1), 4)
    config = ServingConfig(4, 0, 1, 1)
    try:
        trial = run_trial(serve(executors, config), config,
                          TrialSettings("server", 1.0, 100, 5.0, target_qps=200, slo_ms=1000), x, tmp_path, "run")
    finally:
        executors.close()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "mlperf_log_accuracy.json", "mlperf_log_detail.txt", "mlperf_log_summary.txt"]
    r = trial.result
    assert r["validity"] == "INVALID" and r["early_stopping_met"] is False and r["overlatency_queries"] == 0
    assert r["min_duration_met"] and r["min_queries_met"] and r["p99_ms"] < 1000
    more = int(re.search(r"at least (\d+) more", r["early_stopping"]).group(1))
    assert r["queries"] + more == passing_queries(0)  # LoadGen's count and ours agree
    assert not trial.met(1000) and trial.server["completed"] == r["queries"]
    summary = (tmp_path / "run" / "mlperf_log_summary.txt").read_text()
    assert "Result is : INVALID" in summary and "Early stopping satisfied: NO" in summary
    logged = read_responses(tmp_path / "run" / "mlperf_log_accuracy.json")
    assert logged and all(0 <= c < 4 for _, c in logged)  # LoadGen logged our int32 top-1 answers


def test_capacity_end_to_end_through_the_cli(model, tmp_path):
    out = tmp_path / "cap"
    result = CliRunner().invoke(cli.main, ["-q", "capacity", str(model), "--runtime", "onnxruntime", "--slo-ms",
                                           "500", "--scenario", "server,offline", "--duration", "1",
                                           "--max-batch", "2", "--max-trials", "2", "--tail-share", "0",
                                           "--images", "8", "--no-retry-busy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "capacity.json").read_text())
    assert data["format"] == "alexnet-deploy/capacity-report" and data["slo_ms"] == 500
    assert data["qsl"]["real_images"] is False and "seeded random inputs" in data["qsl"]["source"]
    row = data["results"][0]
    for key in ("runtime", "precision", "model", "sha256", "offline_samples_per_s", "server_max_qps",
                "server_p99_ms", "config", "loadgen_summary", "valid", "probe_above"):
        assert key in row
    assert set(row["config"]) >= {"max_batch", "queue_delay_us", "executors", "threads"}
    assert row["valid"] and row["server_p99_ms"] <= 500 and row["offline_samples_per_s"] > 0
    assert "Result is : VALID" in (out / row["loadgen_summary"]).read_text()
    above = row["probe_above"]  # two runs are too few to narrow the edge: whatever failed above is recorded
    assert above is None or (not above["met_slo"] and above["target_qps"] > row["server_max_qps"]
                             and above["ratio"] == pytest.approx(above["target_qps"] / row["server_max_qps"]))
    assert row["accuracy"]["agreement"] == 1.0 and row["accuracy"]["checked"] > 0  # the file is its own reference
    assert data["recommendation"]["runtime"] == "onnxruntime"
    for trial in row["trials"]:
        assert (out / trial["loadgen_summary"]).is_file() and (out / trial["loadgen_detail"]).is_file()
    assert NOT_MLPERF in (out / "capacity.md").read_text() and (out / "capacity.png").stat().st_size > 1000
    assert "Recommended at p99 <= 500 ms: onnxruntime fp32" in result.output
    # How busy the machine was, for the whole run and per row (a busy one is flagged in capacity.md).
    load = data["environment"]["load"]
    assert load["seconds"] > 0 and 0 <= load["other_processes_cpu_share"] <= 1 and load["host_canary"]["p50_ms"] > 0
    assert set(row["load"]) == {"seconds", "other_processes_cpu_share", "steal_share", "busy"}


def test_a_busy_machine_is_flagged_in_the_capacity_report():
    from deploy.serving.render import busy_warning

    def data(busy: bool) -> dict:
        load = {"seconds": 60.0, "other_processes_cpu_share": 0.4 if busy else 0.01, "steal_share": 0.0, "busy": busy}
        row = {"runtime": "openvino", "precision": "int8", "load": load}
        return {"environment": {"load": {"warning": "the machine was busy while measuring" if busy else None}},
                "results": [row]}

    assert busy_warning(data(True)) == ("*Warning: the machine was busy while measuring; busy rows: openvino int8 "
                                        "(40% other processes, 0% steal).*")
    assert busy_warning(data(False)) is None
