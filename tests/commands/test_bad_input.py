"""Every command against hostile and careless input: one ``Error:`` line naming the problem, an exit code of 1 (bad
file, failed check), 2 (bad usage) or 3 (not available here), no traceback, and every input and earlier result
byte-for-byte unchanged. Each case builds only what it needs (tiny files, no AlexNet export), so the table is quick.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Callable

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import cli
from tests.helpers import make_image_folder, make_pooling_classifier

CLASSES = ["circle", "square", "star", "cross", "ring", "triangle"]


class Payload:
    """What a malicious optimizer.pt would run on unpickling: it would leave a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def _earlier_run(folder: Path) -> Path:
    """A folder that looks like an earlier training run (contents are never read by the refused commands)."""
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "model.json", "history.csv"):
        (folder / name).write_bytes(os.urandom(64))
    return folder


def _earlier_pipeline(folder: Path) -> Path:
    _earlier_run(folder / "train")
    for sub, name in (("onnx", "model.fp32.onnx"), ("report", "report.json"), ("report", "latency.png")):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / name).write_bytes(os.urandom(64))
    return folder


def _bad_checkpoint(folder: Path, **changes) -> Path:
    """A checkpoint whose metadata (in the safetensors header) is broken as ``changes`` say."""
    meta = {"format": "alexnet-deploy/checkpoint", "format_version": 1, "architecture": "alexnet-2012",
            "num_classes": 6, "class_names": CLASSES, "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2],
            "dropout": 0.5, **changes}
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"),
              metadata={"alexnet_deploy": json.dumps(meta)})
    return folder


def _malicious_resume(folder: Path, marker: Path) -> Path:
    state = folder / "resume" / "epoch-0000"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"epoch": 0, "config": {}}))
    save_file({"w": torch.zeros(2)}, str(state / "model.safetensors"))
    (state / "optimizer.pt").write_bytes(pickle.dumps(Payload(str(marker))))
    (folder / "resume" / "LATEST").write_text("epoch-0000\n")
    return folder


# (id, setup(tmp) -> args, expected exit code, a fragment of the one Error line)
CASES: list[tuple[str, Callable[[Path], list], int, str]] = [
    # train: every option checked before the earlier run is touched
    ("train-nan-lr-overwrite", lambda t: ["train", "--out", _earlier_run(t / "old"), "--overwrite", "--lr", "nan"],
     2, "--lr must be a finite number"),
    ("train-nan-lr-distributed", lambda t: ["train", "--nproc-per-node", "2", "--device", "cpu", "--lr", "nan"], 2,
     "--lr must be a finite number"),  # refused before torchrun starts any process
    ("train-nan-weight-decay", lambda t: ["train", "--out", _earlier_run(t / "old"), "--overwrite",
                                          "--weight-decay", "nan"], 2, "--weight-decay"),
    ("train-nan-dropout", lambda t: ["train", "--dropout", "nan"], 2, "--dropout"),
    ("train-dropout-1", lambda t: ["train", "--dropout", "1"], 2, "--dropout"),
    ("train-seed-negative", lambda t: ["train", "--seed", "-1"], 2, "--seed"),
    ("train-seed-huge", lambda t: ["train", "--seed", str(2**70)], 2, "--seed"),
    ("train-nan-zoom", lambda t: ["train", "--zoom", "nan,1.2"], 2, "--zoom"),
    ("train-nan-rotation", lambda t: ["train", "--rotation", "nan"], 2, "--rotation"),
    ("train-out-is-a-file", lambda t: ["train", "--data", make_image_folder(t / "data"), "--out",
                                       _file(t / "f.txt")], 2, "is a file"),
    ("train-unknown-device", lambda t: ["train", "--device", "gpu"], 2, "unknown device 'gpu'"),
    ("train-cuda-without-gpu", lambda t: ["train", "--data", make_image_folder(t / "data"), "--out", t / "r",
                                          "--device", "cuda"], 3, "no CUDA GPU"),
    ("train-one-class-overwrite", lambda t: ["train", "--data", make_image_folder(t / "data", classes=("a",)),
                                             "--out", _earlier_run(t / "old"), "--overwrite"], 1, "at least 2 classes"),
    ("train-malicious-resume", lambda t: ["train", "--resume", _malicious_resume(t / "run", t / "PWNED")],
     1, "unreadable or unsafe"),
    # export: refuses to write over its input, reads no broken metadata
    ("export-onto-its-checkpoint", lambda t: ["export", _bad_checkpoint(t / "run") / "model.safetensors", "-o",
                                              t / "run" / "model.safetensors"], 2, "would destroy it"),
    ("export-json-onto-its-run-folders-weights", lambda t: ["export", _bad_checkpoint(t / "run"), "-o", t / "m.onnx",
                                                            "--json", t / "run" / "model.safetensors"], 2,
     "is the checkpoint"),
    ("export-text-dropout", lambda t: ["export", _bad_checkpoint(t / "run", dropout="half")], 1, "dropout"),
    ("export-two-value-mean", lambda t: ["export", _bad_checkpoint(t / "run", mean=[0.5, 0.5])], 1, "mean must be 3"),
    ("export-empty-class-name", lambda t: ["export", _bad_checkpoint(t / "run", class_names=[""] * 6)], 1,
     "class_names"),
    ("export-unwritable-output", lambda t: ["export", _bad_checkpoint(t / "run"), "-o",
                                            _file(t / "f") / "m.onnx"], 1, "cannot write"),
    # bench: reports never land on an input; every number finite and bounded
    ("bench-json-onto-model", lambda t: ["bench", _model(t), "--json", t / "m.onnx"], 2, "would destroy it"),
    ("bench-markdown-onto-model", lambda t: ["bench", _model(t), "--markdown", t / "m.onnx"], 2, "would destroy it"),
    ("bench-json-onto-the-reference-runs-weights", lambda t: ["bench", _model(t), "--reference",
                                                              _bad_checkpoint(t / "run"), "--json",
                                                              t / "run" / "model.safetensors"], 2, "is the checkpoint"),
    ("bench-json-and-markdown-one-file", lambda t: ["bench", _model(t), "--json", t / "r.txt", "--markdown",
                                                    t / "r.txt"], 2, "--markdown"),
    ("bench-unwritable-json", lambda t: ["bench", _model(t), "--json", _file(t / "f") / "r.json"], 1,
     "cannot write"),  # refused before the bench runs, not after it
    ("bench-duration-nan", lambda t: ["bench", _model(t), "--duration", "nan"], 2, "--duration"),
    ("bench-duration-inf", lambda t: ["bench", _model(t), "--duration", "inf"], 2, "--duration"),
    ("bench-warmup-inf", lambda t: ["bench", _model(t), "--warmup", "infs"], 2, "--warmup"),
    ("bench-huge-batch", lambda t: ["bench", _model(t), "--batch-sizes", "100000"], 2, "1..256"),
    ("bench-empty-onnx", lambda t: ["bench", _file(t / "e.onnx", b""), "--runtime", "onnxruntime"], 1,
     "0 input(s)"),
    ("bench-garbage-onnx", lambda t: ["bench", _file(t / "g.onnx", b"\x00garbage\xff" * 9)], 1, "not a readable ONNX"),
    ("bench-metadata-not-json", lambda t: ["bench", _model(t, raw_props={"seed": "{nope"})], 1, "is not JSON"),
    ("bench-partial-metadata", lambda t: ["bench", _model(t, meta={"std": None})], 1, "missing std"),
    ("bench-empty-class-names", lambda t: ["bench", _model(t, classes=[])], 1, "class_names"),
    ("bench-dynamic-height-width", lambda t: ["bench", _model(t, dynamic_hw=True), "--runtime", "onnxruntime"], 2,
     "only the batch dimension may be dynamic"),
    ("bench-changed-checkpoint", lambda t: ["bench", _model(t, meta={"checkpoint_path": str(_file(t / "c.st")),
                                                                    "checkpoint_sha256": "0" * 64})], 1,
     "not the checkpoint the ONNX file was exported from"),
    ("bench-unavailable-runtime", lambda t: ["bench", _model(t), "--runtime", "tensorrt"], 3, "tensorrt"),
    # predict: the model must match its labels; only regular files are read
    ("predict-fewer-logits-than-classes", lambda t: ["predict", _model(t, logits=4), _file(t / "x.jpg")], 1,
     "one score per class"),
    ("predict-dynamic-height-width", lambda t: ["predict", _model(t, dynamic_hw=True), _file(t / "x.jpg")], 1,
     "predict feeds one input of shape"),
    ("predict-top-k-too-large", lambda t: ["predict", _model(t), _file(t / "x.jpg"), "--top-k", "7"], 1,
     "--top-k 7 is outside 1..6"),
    # pipeline: an earlier run survives every refusal
    ("pipeline-one-class-overwrite", lambda t: ["pipeline", "--data", make_image_folder(t / "d", classes=("a",)),
                                                "--out", _earlier_pipeline(t / "p"), "--overwrite"], 1,
     "at least 2 classes"),
    ("pipeline-corrupt-checkpoint-overwrite", lambda t: ["pipeline", "--checkpoint", _earlier_run(t / "ck"), "--out",
                                                         _earlier_pipeline(t / "p"), "--overwrite"], 1,
     "not a readable safetensors file"),
    ("pipeline-nan-lr-overwrite", lambda t: ["pipeline", "--out", _earlier_pipeline(t / "p"), "--overwrite", "--lr",
                                             "nan"], 2, "--lr must be a finite number"),
]


def _file(path: Path, data: bytes = b"not an image") -> Path:
    path.write_bytes(data)
    return path


def _model(tmp: Path, classes: list[str] = CLASSES, **kwargs) -> Path:
    return make_pooling_classifier(tmp / "m.onnx", classes, **kwargs)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.timeout(120)  # a case that hangs (a NaN duration, a pipe read as an image) fails instead of blocking
@pytest.mark.parametrize("setup, code, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_error_and_destroys_nothing(tmp_path, monkeypatch, setup, code, message):
    monkeypatch.chdir(tmp_path)  # a default output (runs/<timestamp>) lands in the test's folder
    args = [str(a) for a in setup(tmp_path)]
    before = _hashes(tmp_path)
    result = CliRunner().invoke(cli.main, ["-q", *args])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == code, result.output
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    after = _hashes(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # every input and earlier result intact
    assert not (tmp_path / "PWNED").exists()  # the unpickling payload never ran


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.timeout(60)
def test_predict_does_not_block_on_a_pipe_named_like_an_image(tmp_path):
    os.mkfifo(tmp_path / "x.jpg")
    result = CliRunner().invoke(cli.main, ["predict", str(_model(tmp_path)), str(tmp_path / "x.jpg")])
    assert result.exit_code == 1 and "not a regular file" in result.output and "Traceback" not in result.output


def test_a_file_name_that_is_not_utf8_on_a_strict_terminal(tmp_path):
    """The error line names the file with its undecodable bytes escaped, instead of a UnicodeEncodeError."""
    import subprocess
    import sys

    bad = tmp_path / os.fsdecode(b"photo-\xff.jpg")
    bad.write_bytes(b"not an image")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    root = Path(cli.__file__).parent
    done = subprocess.run([sys.executable, str(root / "cli.py"), "-q", "predict", str(_model(tmp_path)), str(bad)],
                          capture_output=True, env=env, cwd=root, timeout=120)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 1 and "photo-\\udcff.jpg" in stderr and "Traceback" not in stderr, stderr
