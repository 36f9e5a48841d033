"""capacity against bad input: one ``Error:`` line, exit 2 (bad usage) or 3 (not installed), no traceback, nothing
touched; an earlier report kept unless --overwrite; Ctrl-C keeps the finished runs and a partial report."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

import cli
from tests.helpers import make_pooling_classifier

pytest.importorskip("mlperf_loadgen")
ROOT = Path(cli.__file__).parent


def _model(t: Path) -> Path:
    return make_pooling_classifier(t / "m.onnx", ["a", "b", "c"])


def _earlier_report(t: Path) -> Path:
    out = t / "out"
    (out / "trials").mkdir(parents=True)
    (out / "capacity.json").write_text('{"format": "alexnet-deploy/capacity-report"}')
    return out


def _model_inside_trials(t: Path) -> list:
    (t / "out" / "trials").mkdir(parents=True, exist_ok=True)
    return [make_pooling_classifier(t / "out" / "trials" / "m.onnx", ["a", "b"]), *BASE, "--out", t / "out"]


BASE = ["--runtime", "onnxruntime", "--slo-ms", "50"]
# (id, setup(tmp) -> args after `capacity`, exit code, a fragment of the one Error line)
CASES: list[tuple[str, Callable[[Path], list], int, str]] = [
    ("slo-zero", lambda t: [_model(t), "--runtime", "onnxruntime", "--slo-ms", "0", "--out", t / "o"], 2, "--slo-ms"),
    ("slo-negative", lambda t: [_model(t), "--runtime", "onnxruntime", "--slo-ms", "-5", "--out", t / "o"], 2,
     "--slo-ms"),
    ("slo-nan", lambda t: [_model(t), "--runtime", "onnxruntime", "--slo-ms", "nan", "--out", t / "o"], 2,
     "--slo-ms"),
    ("slo-inf", lambda t: [_model(t), "--runtime", "onnxruntime", "--slo-ms", "inf", "--out", t / "o"], 2,
     "--slo-ms"),
    ("slo-below-one-sample", lambda t: [_model(t), "--runtime", "onnxruntime", "--slo-ms", "0.0001", "--out",
                                        t / "o"], 2, "the fastest measured single-sample p50 is"),
    ("duration-short", lambda t: [_model(t), *BASE, "--duration", "0.5", "--out", t / "o"], 2, "--duration"),
    ("duration-long", lambda t: [_model(t), *BASE, "--duration", "601", "--out", t / "o"], 2, "--duration"),
    ("duration-nan", lambda t: [_model(t), *BASE, "--duration", "nan", "--out", t / "o"], 2, "--duration"),
    ("unknown-scenario", lambda t: [_model(t), *BASE, "--scenario", "burst", "--out", t / "o"], 2,
     "unknown scenario 'burst'"),
    ("unknown-runtime", lambda t: [_model(t), "--runtime", "onnxrt", "--slo-ms", "50", "--out", t / "o"], 2,
     "unknown runtime 'onnxrt'"),
    ("tail-share-too-large", lambda t: [_model(t), *BASE, "--tail-share", "1%", "--out", t / "o"], 2,
     "--tail-share"),
    ("model-twice", lambda t: [_model(t), _model(t), *BASE, "--out", t / "o"], 2, "given more than once"),
    ("out-is-a-file", lambda t: [_model(t), *BASE, "--out", _model(t)], 2, "is a file"),
    ("out-would-replace-the-model", _model_inside_trials, 2, "would replace the input"),
    ("runtime-not-installed", lambda t: [_model(t), "--runtime", "tensorrt", "--slo-ms", "50", "--out", t / "o"], 3,
     "tensorrt"),
    ("earlier-report", lambda t: [_model(t), *BASE, "--out", _earlier_report(t)], 1,
     "already holds a capacity report"),
]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _invoke(args: list) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(cli.main, ["-q", "capacity", *map(str, args)])
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None))), result.output
    return result.exit_code, [line for line in result.output.splitlines() if line.startswith("Error:")], result.output


@pytest.mark.timeout(120)
@pytest.mark.parametrize("setup, code, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_touches_nothing(tmp_path, setup, code, message):
    args = setup(tmp_path)
    before = _hashes(tmp_path)
    exit_code, errors, output = _invoke(args)
    assert exit_code == code, output
    assert len(errors) == 1 and message in errors[0], output
    assert _hashes(tmp_path) == before  # no report, no trial folder, every input as it was
    assert not (tmp_path / "o").exists()


def test_loadgen_missing_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlperf_loadgen", None)  # what `import mlperf_loadgen` meets without it
    exit_code, errors, output = _invoke([_model(tmp_path), *BASE, "--out", tmp_path / "o"])
    assert exit_code == 3 and len(errors) == 1, output
    assert "MLPerf LoadGen is not installed" in errors[0] and "pip install mlcommons-loadgen==6.0.17" in errors[0]


@pytest.mark.slow
def test_overwrite_replaces_an_earlier_report_only_once_the_new_one_exists(tmp_path):
    out = _earlier_report(tmp_path)
    args = [_model(tmp_path), "--runtime", "onnxruntime", "--slo-ms", "500", "--scenario", "offline",
            "--duration", "1", "--max-batch", "2", "--images", "4", "--out", out, "--overwrite"]
    exit_code, errors, output = _invoke(args)
    assert exit_code == 0, output
    data = json.loads((out / "capacity.json").read_text())
    assert data["results"][0]["offline_samples_per_s"] > 0 and not list(out.glob(".*replaced*"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ctrl_c_stops_the_search_and_keeps_the_finished_runs(tmp_path):
    """SIGINT during the search: exit 130 within seconds, capacity.json marked partial with the runs that finished
    (their LoadGen logs on disk), the run in progress dropped."""
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "cli.py"), "-q", "capacity", str(_model(tmp_path)), "--runtime", "onnxruntime",
           "--slo-ms", "500", "--scenario", "server", "--duration", "2", "--max-batch", "2", "--max-trials", "50",
           "--tail-share", "0", "--images", "4", "--no-retry-busy", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = out / "trials" / "onnxruntime-fp32"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len([p for p in folder.glob("[0-9]*") if p.is_dir()]) < 2:
        time.sleep(0.2)
    time.sleep(0.5)  # inside the third run
    os.kill(proc.pid, signal.SIGINT)
    start = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert time.monotonic() - start < 15 and "Traceback" not in stderr
    data = json.loads((out / "capacity.json").read_text())
    trials = data["results"][0]["trials"]
    assert data["partial"] and data["results"][0]["status"] == "interrupted" and len(trials) >= 2
    for trial in trials:
        assert (out / trial["loadgen_summary"]).is_file()
    assert not list(folder.glob(".*.tmp"))  # the interrupted run left nothing half-written
