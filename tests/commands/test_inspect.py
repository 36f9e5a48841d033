"""`cli.py inspect` in-process: bad inputs (one Error line, the exit code, nothing lost), a quick layer-time run on a
small AlexNet, and (slow) the whole command on the exporter's files of a full one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from export.layers import LAYERS
from runtimes.registry import availability
from tests.helpers import make_pooling_classifier

pytest.importorskip("onnx")


def invoke(*args):
    return CliRunner().invoke(cli.main, ["-q", "inspect", *map(str, args)])


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _pooling(tmp: Path) -> Path:
    return make_pooling_classifier(tmp / "m.onnx", ["a", "b"])


CASES = [
    ("out is the model", lambda t: [_pooling(t), "--out", t / "m.onnx"], 2, "Invalid value for '--out'"),
    ("out holds an input", lambda t: [_pooling(t), (t / "o").mkdir() or make_pooling_classifier(
        t / "o" / "layers.json", ["a", "b"]), "--out", t / "o"], 2, "would destroy it"),
    ("not an AlexNet graph", lambda t: [_pooling(t), "--runtime", "onnxruntime", "--out", t / "out"], 1,
     "not an AlexNet graph"),
    ("garbage file", lambda t: [(t / "bad.onnx").write_bytes(b"garbage") and t / "bad.onnx", "--out", t / "out"], 1,
     "not a readable ONNX model"),
    ("precision no file has", lambda t: [_pooling(t), "--precision", "int8", "--out", t / "out"], 2,
     "none of the files is int8"),
    ("nothing to do", lambda t: [_pooling(t), "--no-parity", "--no-time", "--out", t / "out"], 2,
     "leave nothing to do"),
    ("unknown runtime", lambda t: [_pooling(t), "--runtime", "tvm", "--out", t / "out"], 2, "tvm"),
    ("no images", lambda t: [_pooling(t), "--images", "0", "--out", t / "out"], 2, "--images"),
    ("NaN duration", lambda t: [_pooling(t), "--duration", "nan", "--out", t / "out"], 2, "--duration"),
    ("no out", lambda t: [_pooling(t)], 2, "--out"),
]


@pytest.mark.parametrize("setup,code,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_destroys_nothing(tmp_path, setup, code, message):
    args = setup(tmp_path)
    before = _hashes(tmp_path)
    result = invoke(*args)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == code, result.output
    assert len(errors) == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    assert _hashes(tmp_path) == before  # inputs intact, no report written


def test_a_named_runtime_that_cannot_run_here_exits_3(tmp_path):
    if availability("tensorrt")[0]:
        pytest.skip("TensorRT runs here")
    result = invoke(_pooling(tmp_path), "--runtime", "tensorrt", "--out", tmp_path / "out")
    assert result.exit_code == 3 and result.output.count("Error:") == 1 and "tensorrt" in result.output


def test_layer_time_on_a_small_alexnet(tmp_path):
    """Without a checkpoint, --no-parity still profiles the ONNX runtimes: every layer timed, files written."""
    pytest.importorskip("onnxscript")
    from tests.export.layer_graphs import shared_forms

    forms = shared_forms()
    files = [forms.save(form, tmp_path / f"{form}.onnx") for form in ("fp32-conv", "int8-native")]
    out = tmp_path / "report"
    result = invoke(*files, "--runtime", "onnxruntime,openvino", "--no-parity", "--batch-size", "1", "--duration",
                    "0.1", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "layers.json").read_text())
    assert report["format"] == "alexnet-deploy/layers-report" and report["parity"] == []
    rows = {(p["runtime"], p["precision"]) for p in report["profiles"]}
    assert rows >= {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")}
    assert rows - {("openvino", "bf16")} == rows & {(r, p) for r in ("onnxruntime", "openvino")
                                                  for p in ("fp32", "int8")}  # bf16 where OpenVINO has it
    for profile in report["profiles"]:
        assert profile["available"] and [t["layer"] for t in profile["layers"]] == list(LAYERS)
        assert profile["measured_ms"] > 0 and not profile["unattributed"]
    assert "onnxruntime bf16" in report["skipped"] and (out / "layer_time.png").stat().st_size > 10_000
    assert "## Layer time at batch 1" in (out / "layers.md").read_text()


def test_inspect_on_the_exporters_files(exported, tmp_path):
    """The whole command (slow): fp32 and int8 exports of a full AlexNet with its checkpoint and images; every layer
    has a parity row per runtime × precision and a time, and nothing diverges."""
    files = [exported("fp32").path, exported("int8", lrn="native").path]
    out = tmp_path / "report"
    result = invoke(*files, "--runtime", "torch,onnxruntime,openvino", "--images", "4", "--batch-size", "2",
                    "--duration", "0.2", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "layers.json").read_text())
    assert all(p["passed"] and [d["layer"] for d in p["layers"]] == list(LAYERS) for p in report["parity"])
    assert {(p["runtime"], p["precision"]) for p in report["parity"]} >= {
        ("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8"),
        ("openvino", "int8")}
    assert all(p["available"] for p in report["profiles"])
    assert (out / "layer_error.png").is_file() and "## Layer parity" in (out / "layers.md").read_text()
