"""`cli.py pipeline` end to end on a tiny image folder: the report folder, --checkpoint, skips, failures, Ctrl-C."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import cli
from runtimes.registry import availability
from tests.helpers import make_image_folder
from core.fileio import sha256_file
from deploy.formats import PIPELINE_FORMAT_VERSION

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytestmark = pytest.mark.slow

QUICK = ["--batch-sizes", "1,2", "--duration", "0.05", "--warmup", "1", "--parity-samples", "8"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args):
    result = CliRunner().invoke(cli.main, ["pipeline", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def read_report(out: Path) -> dict:
    return json.loads((out / "report" / "report.json").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """3 classes × 6 images: 15 training and 3 validation images (a 20 % split)."""
    return make_image_folder(tmp_path_factory.mktemp("pipeline") / "data", per_class=6)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, data_dir):
    """One full pipeline run: 1 epoch, fp32 + int8, torch + onnxruntime, batch sizes 1 and 2."""
    out = tmp_path_factory.mktemp("e2e") / "out"
    result = invoke("--data", data_dir, "--out", out, "--epochs", "1", "--batch-size", "4", "--workers", "0",
                    "--precisions", "fp32,int8", "--runtimes", "torch,onnxruntime", *QUICK)
    return result, out


def test_end_to_end_writes_the_documented_report(e2e):
    result, out = e2e
    assert result.exit_code == 0, result.output
    assert (out / "train" / "model.safetensors").is_file() and (out / "train" / "history.csv").is_file()
    for name in ("training", "latency", "throughput", "choice"):
        assert (out / "report" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    report = read_report(out)
    assert report["status"] == "passed" and report["failures"] == []
    assert report["plots"] == {"training": "training.png", "latency": "latency.png", "throughput": "throughput.png",
                               "choice": "choice.png"}
    assert report["format_version"] == PIPELINE_FORMAT_VERSION and report["gate"] is None  # no --baseline

    training = report["training"]
    assert training["source"] == "trained" and training["epochs_run"] == 1 and training["best_epoch"] == 1
    assert training["stop_reason"] == "reached --epochs 1" and training["lr_reductions"] == 0
    assert len(training["history"]) == 1 and set(training["history"][0]) >= {"loss", "val_accuracy", "lr"}

    kinds = {(a["kind"], a["precision"]): a for a in report["artifacts"]}
    assert set(kinds) == {("checkpoint", None), ("onnx", "fp32"), ("onnx", "int8")}
    assert kinds[("onnx", "int8")]["path"] == str(out / "onnx" / "model.int8.onnx")
    for artifact in report["artifacts"]:
        assert artifact["sha256"] == sha256_file(artifact["path"]), artifact["path"]

    rows = report["rows"]
    assert [(r["runtime"], r["precision"], r["batch_size"]) for r in rows] == [
        ("torch", "fp32", 1), ("torch", "fp32", 2), ("onnxruntime", "fp32", 1), ("onnxruntime", "fp32", 2),
        ("onnxruntime", "int8", 1), ("onnxruntime", "int8", 2)]
    reference = rows[0]["top1_accuracy"]
    for r in rows:
        assert r["p50_ms"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["throughput"] > 0
        assert r["parity_passed"] is True and r["task_passed"] is True and r["task_images"] == 3
        assert 0 <= r["top1_accuracy"] <= 1 and 0 <= r["agreement"] <= 1
        assert r["accuracy_delta_points"] == pytest.approx((r["top1_accuracy"] - reference) * 100)
    assert {r["agreement"] for r in rows if r["runtime"] == "torch"} == {1.0}
    assert all(set(r["parity"]) == {"random", "images"} for r in rows if r["runtime"] == "onnxruntime")
    assert set(report["timings_s"]) >= {"train", "export_fp32", "export_int8", "bench", "task_parity", "plots",
                                        "total"}
    assert (out / "report" / report["bench_files"]["int8"]).is_file()
    for r in rows:  # what the gate resamples when this report is a baseline, and the intervals the report shows
        rounds = r["samples_ms"]["rounds"]
        assert len(rounds) == 5 and sum(map(len, rounds)) == r["iterations"] and r["cv"] >= 0
        lo, hi = r["p50_ci95"]
        assert lo <= r["p50_ms"] <= hi
        lo, hi = r["throughput_ci95"]
        assert lo <= r["throughput"] <= hi
    # Every row was timed in the same interleaved rounds: one load reading covers them all.
    assert report["environment"]["load"]["seconds"] > 0
    # Inside the recommendation: each pick that is not PyTorch itself, layer by layer.
    from export.layers import LAYERS

    picks = {k: v for k, v in report["recommendation"].items() if k in ("latency", "throughput") and v}
    wanted = {k for k, v in picks.items() if v["runtime"] != "torch"}
    if {"latency", "throughput"} <= wanted and all(picks["latency"][k] == picks["throughput"][k]
                                                   for k in ("runtime", "precision", "batch_size")):
        wanted.discard("throughput")  # one deployment is shown once
    assert set(report["layers"]) == wanted
    for objective, table in report["layers"].items():
        assert (table["runtime"], table["batch_size"]) == (picks[objective]["runtime"],
                                                           picks[objective]["batch_size"])
        assert [d["layer"] for d in table["parity"]["layers"]] == list(LAYERS)
        assert table["profile"]["available"] and table["profile"]["measured_ms"] > 0
    if report["layers"]:
        assert "## Inside the recommended deployment" in (out / "report" / "report.md").read_text()


def test_the_report_starts_with_the_recommendation(e2e):
    _, out = e2e
    report = read_report(out)
    rec = report["recommendation"]
    assert rec["max_accuracy_drop_points"] == 0.5 and rec["not_measured"] == []  # only torch and onnxruntime asked
    sha = {a["path"]: a["sha256"] for a in report["artifacts"]}
    for objective, batch, unit, key in (("latency", 1, "ms", "p50_ms"), ("throughput", 2, "img/s", "throughput")):
        pick = rec[objective]
        assert set(pick) == {"objective", "runtime", "precision", "batch_size", "model", "sha256", "value", "unit",
                             "speedup_vs_torch_fp32", "accuracy_delta_points", "runner_up", "ci95", "tied_with",
                             "tie_break", "detail"}
        assert pick["ci95"][0] <= pick["value"] <= pick["ci95"][1]
        assert (pick["objective"], pick["batch_size"], pick["unit"]) == (objective, batch, unit)
        row = next(r for r in report["rows"] if (r["runtime"], r["precision"], r["batch_size"]) ==
                   (pick["runtime"], pick["precision"], batch))
        torch_row = next(r for r in report["rows"] if r["runtime"] == "torch" and r["batch_size"] == batch)
        assert pick["value"] == row[key] and pick["model"] == row["model"] and pick["sha256"] == sha[row["model"]]
        assert pick["speedup_vs_torch_fp32"] == pytest.approx(
            torch_row["p50_ms"] / row["p50_ms"] if objective == "latency" else row["throughput"] /
            torch_row["throughput"])
        assert pick["accuracy_delta_points"] >= -0.5 and pick["runner_up"] is not None
        assert pick["runner_up"]["runtime"] + pick["runner_up"]["precision"] != pick["runtime"] + pick["precision"]
    md = (out / "report" / "report.md").read_text()
    assert md.startswith("# Deployment report\n\n## Recommendation\n\n- **Lowest latency** (batch 1): ")
    assert "![top-1 accuracy vs throughput, the picks marked](choice.png)" in md
    assert md.index("## Recommendation") < md.index("## Training") < md.index("## Results")


def test_report_md_shows_one_row_per_runtime_precision_batch(e2e):
    _, out = e2e
    md = (out / "report" / "report.md").read_text()
    assert "Result: **PASS**" in md and "Epochs run: 1 of 1" in md
    table = [line for line in md.splitlines() if line.startswith("| onnxruntime") or line.startswith("| torch")]
    assert len(table) == 6
    assert all(line.count("|") == 12 for line in table)  # 11 columns: the file, latency, throughput, parity, task
    assert "| torch | fp32 | model.safetensors | 1 |" in md and "| onnxruntime | int8 | model.int8.onnx | 2 |" in md
    for artifact in read_report(out)["artifacts"]:
        assert artifact["sha256"] in md


def test_checkpoint_skips_training_and_unavailable_runtimes_are_listed(e2e, tmp_path):
    _, first = e2e
    if availability("tensorrt")[0]:
        pytest.skip("tensorrt is available here")
    out = tmp_path / "again"
    result = invoke("--checkpoint", first / "train", "--out", out, "--precisions", "fp32", "--epochs", "3",
                    "--runtimes", "onnxruntime,tensorrt", *QUICK)
    assert result.exit_code == 0, result.output
    assert "ignoring --epochs" in result.output  # training options are moot with --checkpoint
    assert not (out / "train").exists()
    report = read_report(out)
    assert report["training"]["source"] == "checkpoint" and report["training"]["epochs_run"] == 1
    checkpoint = report["artifacts"][0]
    assert checkpoint["kind"] == "checkpoint" and checkpoint["sha256"] == sha256_file(first / "train" /
                                                                                      "model.safetensors")
    assert report["runtimes"]["tensorrt"]["status"] == "skipped"
    assert "TensorRT" in report["runtimes"]["tensorrt"]["reason"]
    assert {r["runtime"] for r in report["rows"]} == {"onnxruntime"}
    assert "skipped tensorrt" in (out / "report" / "report.md").read_text()
    # A CPU-only verdict never reads as a GPU one: what did not run is named next to it.
    not_measured = report["recommendation"]["not_measured"]
    assert [(n["runtime"], n["reason"]) for n in not_measured] == [("tensorrt", report["runtimes"]["tensorrt"]
                                                                    ["reason"])]
    assert "Not measured here: tensorrt — " in (out / "report" / "report.md").read_text()


def test_each_runtime_runs_its_own_lrn_form_and_bf16_runs_the_fp32_file(e2e, tmp_path):
    """ONNX Runtime runs the banded-conv LRN export, OpenVINO the native-LRN one (each measured fastest there); bf16
    is OpenVINO computing on the fp32 native file, and ONNX Runtime, which cannot, is listed as skipped."""
    _, first = e2e
    for name in ("openvino",):
        if not availability(name, "bf16")[0]:
            pytest.skip(f"{name} bf16: {availability(name, 'bf16')[1]}")
    out = tmp_path / "forms"
    result = invoke("--checkpoint", first / "train", "--out", out, "--precisions", "fp32,bf16",
                    "--runtimes", "onnxruntime,openvino", *QUICK)
    assert result.exit_code == 0, result.output
    report = read_report(out)
    files = {(r["runtime"], r["precision"]): Path(r["model"]).name for r in report["rows"]}
    assert files == {("onnxruntime", "fp32"): "model.fp32.onnx", ("openvino", "fp32"): "model.fp32.native-lrn.onnx",
                     ("openvino", "bf16"): "model.fp32.native-lrn.onnx"}
    assert {(a["precision"], a["lrn"]) for a in report["artifacts"] if a["kind"] == "onnx"} == {("fp32", "conv"),
                                                                                                ("fp32", "native")}
    assert [(s["runtime"], s["precision"]) for s in report["skipped"]] == [("onnxruntime", "bf16")]
    bf16 = next(t for t in report["task_parity"]["results"] if t["precision"] == "bf16")
    assert bf16["passed"] and bf16["parity"]["tolerance"]["atol"] == 0.25  # judged by bf16's own tolerance


def test_an_earlier_pipeline_run_is_refused_unless_overwrite(e2e, tmp_path):
    _, first = e2e
    out = tmp_path / "out"
    args = ["--checkpoint", first / "train", "--out", out, "--precisions", "fp32", "--runtimes", "onnxruntime", *QUICK]
    assert invoke(*args).exit_code == 0
    (out / "report" / "bench.int8.json").write_text("{}")  # a stale file of an earlier run with more precisions
    before = (out / "report" / "report.json").read_bytes()

    refused = invoke(*args)
    assert refused.exit_code == 1 and refused.output.startswith("Error: ") and "--overwrite" in refused.output
    assert (out / "report" / "report.json").read_bytes() == before  # nothing of the earlier run was touched

    replaced = invoke(*args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert not (out / "report" / "bench.int8.json").exists() and read_report(out)["status"] == "passed"


def test_no_available_runtime_exits_3_with_a_report(tmp_path, data_dir):
    if availability("tensorrt")[0]:
        pytest.skip("tensorrt is available here")
    out = tmp_path / "out"
    result = invoke("--data", data_dir, "--out", out, "--runtimes", "tensorrt")
    assert result.exit_code == 3, result.output
    assert "none of the requested runtimes can run here" in result.output and "tensorrt:" in result.output
    report = read_report(out)
    assert report["status"] == "unavailable" and report["training"] == {}  # nothing trained for nothing to run
    assert not (out / "train").exists()


@pytest.mark.parametrize("args, message", [
    (["--precisions", "fp64"], "fp32, fp16, int8"),
    (["--precisions", "fp32,fp32"], "twice"),
    (["--precisions", ""], "fp32, fp16, int8"),
    (["--runtimes", "tvm"], "onnxruntime-cuda"),
    (["--batch-sizes", "0"], "1..256"),
    (["--warmup", "soon"], "iterations (5) or seconds"),
])
def test_bad_flags_are_usage_errors(tmp_path, args, message):
    result = invoke("--out", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "out").exists()


def test_missing_data_folder_is_one_clear_error(tmp_path):
    result = invoke("--data", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert result.exit_code == 1 and result.output.startswith("Error: data folder not found"), result.output
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("--checkpoint", tmp_path / "empty", "--out", tmp_path / "out")
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "no model.safetensors" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def overflowing_checkpoint(tmp_path_factory, data_dir) -> Path:
    """A checkpoint whose logits exceed fp16's range (65504): its fp16 export must fail parity, and its fp32 export
    passes by construction. fc8's weights are zero and its bias holds the logits, so fp32 computes them exactly
    (0·x + b = b) on every input; scaling the weights instead gave logits of ~1e5 whose fp32 rounding (one of 48
    values off by 1.7e-4 relative) failed the fp32 export too, once in a while."""
    from trainer.checkpoint import model_metadata, save_checkpoint
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD
    from trainer.model import AlexNet

    torch.manual_seed(0)
    model = AlexNet(3)
    with torch.no_grad():
        model.classifier.fc8.weight.zero_()
        model.classifier.fc8.bias.copy_(torch.tensor([1e5, -2e5, 5e4]))  # exact in fp32, beyond fp16's 65504
    meta = model_metadata(3, ["circle", "square", "star"], IMAGENET_MEAN, IMAGENET_STD, 0.5, status="finished",
                          epochs_run=0, data={"path": str(data_dir), "val_split": 0.2, "seed": 0})
    run = tmp_path_factory.mktemp("overflow") / "run"
    save_checkpoint(run, model.state_dict(), meta)
    return run


# fp16 conversion warns about the weights it cannot represent: that is the point of this checkpoint.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_parity_failure_is_recorded_and_exits_1(overflowing_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = invoke("--checkpoint", overflowing_checkpoint, "--out", out, "--precisions", "fp32,fp16",
                    "--runtimes", "onnxruntime", *QUICK)
    assert result.exit_code == 1, result.output
    assert "Error: export fp16: " in result.output
    report = read_report(out)
    assert report["status"] == "failed" and report["failures"][0].startswith("export fp16: ")
    fp16 = report["exports"]["fp16"]
    assert fp16["status"] == "failed" and "misses its tolerance" in fp16["error"]
    assert any(not check["passed"] for check in fp16["parity"])
    assert not (out / "onnx" / "model.fp16.onnx").exists()
    assert fp16["failed_file"] and Path(fp16["failed_file"]).is_file()  # kept for debugging, under another name
    # The fp32 results are all still there.
    assert report["exports"]["fp32"]["status"] == "passed"
    assert {(r["runtime"], r["precision"]) for r in report["rows"]} == {("onnxruntime", "fp32")}
    assert (out / "report" / "latency.png").is_file()
    assert "FAILED export fp16" in (out / "report" / "report.md").read_text()


def test_ctrl_c_writes_the_report_with_what_finished(e2e, tmp_path):
    """Ctrl-C during the second export: the first export is in the report, the pipeline says it was interrupted."""
    from deploy.bench.timing import BenchConfig
    from deploy.pipeline.pipeline import PipelineConfig, PipelineProgress, run_pipeline

    _, first = e2e

    def press_ctrl_c_in_int8(text: str) -> None:
        if text.startswith("calibrat"):  # only the int8 export calibrates
            raise KeyboardInterrupt

    config = PipelineConfig(checkpoint=str(first / "train"), out=str(tmp_path / "out"), precisions=("fp32", "int8"),
                            runtimes=("onnxruntime",), batch_sizes=(1,), parity_samples=8,
                            timing=BenchConfig(warmup_iters=1, iterations=2))
    result = run_pipeline(config, PipelineProgress(export=press_ctrl_c_in_int8))
    assert result.interrupted and not result.passed
    report = read_report(tmp_path / "out")
    assert report["status"] == "interrupted" and report["interrupted_during"] == "export int8"
    assert report["exports"]["fp32"]["status"] == "passed" and "int8" not in report["exports"]
    assert [a["precision"] for a in report["artifacts"] if a["kind"] == "onnx"] == ["fp32"]
    assert report["rows"] == []  # the bench had not started
    assert "INTERRUPTED" in (tmp_path / "out" / "report" / "report.md").read_text()


def test_baseline_gates_the_run_and_a_regression_exits_1_after_the_report(e2e, tmp_path):
    """The e2e run's report as the baseline of a --checkpoint run; its batch-2 row made 100x faster, so that row
    regresses whatever this machine does, while batch 1 stays within a generous allowance."""
    _, first = e2e
    baseline = read_report(first)
    fast = next(r for r in baseline["rows"] if (r["runtime"], r["precision"], r["batch_size"]) ==
                ("onnxruntime", "fp32", 2))
    fast.update(p50_ms=fast["p50_ms"] / 100, throughput=fast["throughput"] * 100,
                samples_ms={"unit": "ms", "rounds": [[v / 100 for v in r] for r in fast["samples_ms"]["rounds"]]})
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline))
    out = tmp_path / "gated"
    result = invoke("--checkpoint", first / "train", "--out", out, "--precisions", "fp32", "--runtimes",
                    "onnxruntime", *QUICK, "--baseline", path, "--max-slowdown", "900%")
    assert result.exit_code == 1, result.output
    assert "Error: regression against the baseline: onnxruntime fp32 batch 2" in result.output
    assert "REGRESSED" in result.output and "Regression gate: FAIL" in result.output  # the table on stdout
    report = read_report(out)  # written before the exit
    gate = report["gate"]
    assert report["status"] == "passed" and not gate["passed"] and report["settings"]["baseline"] == str(path)
    assert {(r["batch_size"], r["status"]) for r in gate["rows"]} == {(1, "ok"), (2, "regressed")}
    assert gate["only_in_baseline"] == ["torch fp32 batch 1", "torch fp32 batch 2", "onnxruntime int8 batch 1",
                                        "onnxruntime int8 batch 2"] and gate["only_in_current"] == []
    assert gate["rows"][0]["baseline_top1_accuracy"] == gate["rows"][0]["current_top1_accuracy"]  # same checkpoint
    assert "## Regression gate" in (out / "report" / "report.md").read_text()


def test_a_baseline_that_is_not_a_report_is_refused_before_anything_runs(tmp_path):
    path = tmp_path / "history.json"
    path.write_text('{"epochs": 3}')
    result = invoke("--out", tmp_path / "out", "--baseline", path)
    assert result.exit_code == 2 and result.output.startswith(f"Error: --baseline {path}: expected a bench report")
    assert not (tmp_path / "out").exists()


def test_slo_adds_capacity_to_the_verdict_and_a_triton_repository_configured_as_measured(e2e, tmp_path):
    """--slo-ms through the library with a quick LoadGen plan: capacity.json under OUT/capacity, the verdict's third
    objective, report.md's section, and OUT/triton with the measured batching in config.pbtxt."""
    from deploy.bench.timing import BenchConfig
    from deploy.pipeline.pipeline import PipelineConfig, run_pipeline
    from deploy.serving.plan import CapacityPlan

    _, first = e2e
    quick = CapacityPlan(slo_ms=500, scenarios=("server", "offline"), duration_s=1, max_batch=2, max_trials=2,
                         tail_share=0, images=8, retry_busy=False)
    config = PipelineConfig(checkpoint=str(first / "train"), out=str(tmp_path / "out"), runtimes=("onnxruntime",),
                            precisions=("int8",), batch_sizes=(1, 2), layers=False, capacity=quick,
                            timing=BenchConfig(warmup_iters=1, duration_s=0.05))
    result = run_pipeline(config)
    assert result.passed, result.failures
    report = result.report
    pick = report["recommendation"]["capacity"]
    assert (pick["runtime"], pick["precision"], pick["unit"]) == ("onnxruntime", "int8", "QPS")
    assert pick["value"] == report["capacity"]["recommendation"]["server_max_qps"] and pick["detail"]["slo_ms"] == 500
    capacity_json = tmp_path / "out" / "capacity" / "capacity.json"
    assert json.loads(capacity_json.read_text())["format"] == "alexnet-deploy/capacity-report"
    assert "## Capacity at p99 <= 500 ms" in (tmp_path / "out" / "report" / "report.md").read_text()
    (model,) = report["triton"]["models"]
    pbtxt = (tmp_path / "out" / "triton" / model / "config.pbtxt").read_text()
    assert "measured by alexnet-deploy capacity" in pbtxt and f"max_batch_size: {pick['batch_size']}" in pbtxt
