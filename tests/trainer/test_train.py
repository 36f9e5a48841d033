"""End to end: train on a tiny folder, resume exactly, survive Ctrl-C, and stop cleanly on a NaN loss."""
import csv
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.config import TrainConfig
from trainer.errors import TrainingDivergedError
from trainer.run import train

pytestmark = pytest.mark.slow  # every test here trains

ROOT = Path(__file__).resolve().parents[2]


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = TrainConfig(data=str(data), out=str(out), epochs=2, batch_size=4, workers=0, warmup_epochs=0, lr=1e-3,
                       amp="off")
    return replace(base, **kw)


def test_training_writes_checkpoint_history_and_metadata(image_folder, tmp_path):
    result = train(_config(image_folder, tmp_path / "run"), show_progress=False)
    run = tmp_path / "run"
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert all(0.0 <= float(r["val_accuracy"]) <= 1.0 for r in rows)
    meta = json.loads((run / "model.json").read_text())
    assert meta["class_names"] == ["circle", "square", "star"] and meta["num_classes"] == 3
    assert meta["input_shape"] == [3, 227, 227] and len(meta["mean"]) == 3 and len(meta["std"]) == 3
    assert meta["status"] == "finished" and meta["epochs_run"] == 2
    assert meta["data"]["train_images"] == 12 and meta["data"]["val_images"] == 3
    assert {"torch", "torchvision", "python"} <= set(meta["versions"])
    assert meta["metrics"] == result.history.rows[meta["best_epoch"]]
    assert result.weights == run / "model.safetensors"
    assert "classifier.fc8.weight" in load_file(str(result.weights))


def test_restore_best_weights_gives_the_best_epochs_weights(image_folder, tmp_path):
    result = train(_config(image_folder, tmp_path / "run", epochs=3), show_progress=False)
    rows = result.history.rows
    best = min(range(3), key=lambda i: rows[i]["val_loss"])
    assert result.meta["best_epoch"] == best
    # the published weights reproduce the best epoch's val_loss
    from trainer.checkpoint import load_checkpoint
    from trainer.data import ImageListDataset, eval_transform, find_split
    from trainer.loop import Trainer

    split = find_split(image_folder, 0.2, 0)
    model = load_checkpoint(tmp_path / "run").build_model()
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), [], [], batch_size=4,
                device=torch.device("cpu"), workers=0, show_progress=False)
    val = t.evaluate(ImageListDataset(split.val, eval_transform(result.meta["mean"], result.meta["std"])))
    assert val["val_loss"] == pytest.approx(rows[best]["val_loss"], rel=1e-5)


@pytest.mark.parametrize("workers, amp", [(0, "off"), (1, "auto")])
def test_resume_continues_exactly_like_an_uninterrupted_run(image_folder, tmp_path, workers, amp):
    """Bit for bit, with data workers, augmentation, dropout, lr warm-up and bf16 autocast (where the CPU has it):
    a resumed run reproduces the uninterrupted one's history and weights exactly."""
    config = _config(image_folder, tmp_path / "full", epochs=3, warmup_epochs=1, workers=workers, amp=amp)
    full = train(config, show_progress=False)
    train(replace(config, out=str(tmp_path / "part"), epochs=1), show_progress=False)
    resumed = train(TrainConfig(), resume=tmp_path / "part", resume_epochs=3, show_progress=False)
    assert resumed.history.epochs_run == 3
    assert resumed.history.rows == full.history.rows
    wa, wb = load_file(str(full.weights)), load_file(str(resumed.weights))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_epoch(image_folder, tmp_path):
    cfg = _config(image_folder, tmp_path / "run", epochs=1, lr=1e-3)
    train(cfg, show_progress=False)
    with pytest.raises(TrainingDivergedError, match=r"loss became (nan|inf).*try a lower --lr"):
        _diverge(tmp_path / "run")
    state = json.loads((tmp_path / "run" / "resume" / "epoch-0000" / "state.json").read_text())
    assert state["epoch"] == 0  # the last good epoch's resume state is untouched
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["status"] == "diverged" and meta["epochs_run"] == 1


def _diverge(run: Path) -> None:
    """Resume a good run with an absurd learning rate in its optimizer state (the saved settings are checked on
    resume, so they stay valid) so the loss overflows within an epoch."""
    opt_path = run / "resume" / "epoch-0000" / "optimizer.pt"
    opt = torch.load(opt_path, weights_only=True)
    for group in opt["param_groups"]:
        group["lr"] = 1e12
    torch.save(opt, opt_path)
    train(TrainConfig(), resume=run, resume_epochs=3, show_progress=False)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_saves_and_the_run_resumes(image_folder, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", "--data", str(image_folder), "--out", str(run),
           "--epochs", "50", "--batch-size", "4", "--amp", "off"]  # default workers: a forkserver process
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "resume" / "LATEST").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "train --resume" in err
    meta = json.loads((run / "model.json").read_text())
    assert meta["status"] == "interrupted" and meta["epochs_run"] >= 1
    done = meta["epochs_run"]
    result = train(TrainConfig(), resume=run, resume_epochs=done + 1, show_progress=False)
    assert result.history.epochs_run == done + 1
    assert result.meta["status"] == "finished"
