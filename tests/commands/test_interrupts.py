"""kill -9, Ctrl-C and a full disk in the middle of the work: a resumable state or the previous state remains, no
half-written file is left, and no child process (data workers, their forkserver) outlives the command."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import cli
from tests.helpers import make_image_folder

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals, /proc")]
ROOT = Path(cli.__file__).resolve().parent
QUICK_TRAIN = ["--batch-size", "4", "--amp", "off"]


def _train_process(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """`cli.py train` with its default data workers (a forkserver and a worker per loader), in a process group of
    its own, as a terminal runs it (Ctrl-C signals the whole group)."""
    return subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "-q", "train", "--data", str(data), "--out",
                             str(out), "--epochs", "50", *QUICK_TRAIN, *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _descendants(pid: int) -> set[int]:
    children = set()
    for task in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((task / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            children |= {int(task.name)} | _descendants(int(task.name))
    return children


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie has exited; it only waits to be reaped
            alive.add(pid)
    return alive


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None and path.exists(), proc.communicate()


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def test_kill_9_leaves_a_resumable_run_and_no_process(tmp_path):
    data, run = make_image_folder(tmp_path / "data", per_class=8), tmp_path / "run"
    proc = _train_process(data, run)
    _wait_for(run / "resume" / "LATEST", proc)
    children = _descendants(proc.pid)
    assert children, "the trainer started no data workers: nothing to check"
    proc.kill()
    proc.wait()
    deadline = time.time() + 20
    while _alive(children) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(children), "processes outlived the killed trainer"
    resumed = CliRunner().invoke(cli.main, ["-q", "train", "--resume", str(run), "--epochs", "2", "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "model.json").read_text())["epochs_run"] == 2


def test_ctrl_c_exits_130_without_tracebacks_and_keeps_the_epoch(tmp_path):
    data, run = make_image_folder(tmp_path / "data", per_class=8), tmp_path / "run"
    proc = _train_process(data, run)
    _wait_for(run / "resume" / "LATEST", proc)
    children = _descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the trainer, its forkserver and workers all get it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "train --resume" in err and json.loads((run / "model.json").read_text())["status"] == "interrupted"
    time.sleep(1)
    assert not _alive(children)


def test_kill_9_during_overwrite_puts_the_earlier_run_back_next_time(tmp_path):
    data, run = make_image_folder(tmp_path / "data", per_class=8), tmp_path / "run"
    first = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), "--epochs", "1",
                                          "--workers", "0", *QUICK_TRAIN])
    assert first.exit_code == 0, first.output
    earlier = _hashes(run)
    proc = _train_process(data, run, "--overwrite", "--seed", "1")
    deadline = time.time() + 120
    while not list(run.glob(".model.safetensors.replaced-*")) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # set aside, no epoch finished yet
    proc.wait()
    again = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), *QUICK_TRAIN])
    assert again.exit_code == 1 and "already holds a training run" in again.output  # recovered, so refused
    assert _hashes(run) == earlier and not list(run.glob(".*replaced-*"))


def test_a_full_disk_while_saving_an_epoch_keeps_the_previous_one(tmp_path, monkeypatch):
    """The second epoch's resume state fails half-written (ENOSPC): one Error line, the first epoch stays the
    resumable state, and no half-written epoch folder is left."""
    import trainer.checkpoint

    data, run = make_image_folder(tmp_path / "data", per_class=8), tmp_path / "run"
    real_save, saves = trainer.checkpoint.torch.save, []

    def save_until_full(obj, path, *args, **kwargs):
        saves.append(path)
        if len(saves) == 2:
            Path(path).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(trainer.checkpoint.torch, "save", save_until_full)
    result = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), "--epochs", "3",
                                           "--workers", "0", *QUICK_TRAIN])
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "No space left on device" in errors[0], result.output
    assert "Traceback" not in result.output
    assert (run / "resume" / "LATEST").read_text().strip() == "epoch-0000"
    assert sorted(p.name for p in (run / "resume").iterdir()) == ["LATEST", "epoch-0000"]


def test_a_full_disk_during_export_writes_nothing(tmp_path, monkeypatch, checkpoint):
    import onnx

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx, "save", full)
    result = CliRunner().invoke(cli.main, ["-q", "export", str(checkpoint), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and "No space left" in result.output
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_ctrl_c_before_the_first_epoch_of_an_overwrite_keeps_the_earlier_run(tmp_path, monkeypatch):
    import trainer.loop

    data, run = make_image_folder(tmp_path / "data", per_class=8), tmp_path / "run"
    first = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), "--epochs", "1",
                                          "--workers", "0", *QUICK_TRAIN])
    assert first.exit_code == 0, first.output
    earlier = _hashes(run)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer.loop.Trainer, "train_one_epoch", interrupted)
    result = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), "--overwrite",
                                           "--workers", "0", *QUICK_TRAIN])
    assert result.exit_code == 130 and "earlier run is back in place" in result.output, result.output
    assert _hashes(run) == earlier and not list(run.glob(".*replaced-*"))


def _earlier_training_run(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    data, run = make_image_folder(tmp_path / "data", per_class=8), tmp_path / "run"
    first = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), "--epochs", "1",
                                          "--workers", "0", *QUICK_TRAIN])
    assert first.exit_code == 0, first.output
    return data, run, _hashes(run)


def test_ctrl_c_while_the_first_epoch_of_an_overwrite_is_saved_keeps_the_new_run(tmp_path, monkeypatch):
    """The interrupt lands while the new run's first checkpoint is written: that epoch is published, so the new run
    is the run (resumable) and the earlier one is gone — not put back over it."""
    from trainer.checkpoint import BackgroundSaver

    data, run, earlier = _earlier_training_run(tmp_path)
    original = BackgroundSaver.wait

    def wait_then_ctrl_c(self):
        pending = self._thread is not None
        original(self)
        if pending:
            raise KeyboardInterrupt

    monkeypatch.setattr(BackgroundSaver, "wait", wait_then_ctrl_c)
    result = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), "--overwrite",
                                           "--epochs", "2", "--seed", "1", "--workers", "0", *QUICK_TRAIN])
    assert result.exit_code == 130 and "last finished epoch (1) is saved" in result.output, result.output
    assert _hashes(run) != earlier and (run / "resume" / "LATEST").is_file()
    assert not list(run.glob(".*replaced-*"))


def test_a_failure_after_the_earlier_run_is_set_aside_puts_it_back(tmp_path, monkeypatch):
    import trainer.run
    from core.errors import ToolkitError

    data, run, earlier = _earlier_training_run(tmp_path)

    def out_of_memory(*args, **kwargs):
        raise ToolkitError("out of memory while placing the model")

    monkeypatch.setattr(trainer.run, "to_training_layout", out_of_memory)
    result = CliRunner().invoke(cli.main, ["-q", "train", "--data", str(data), "--out", str(run), "--overwrite",
                                           "--workers", "0", *QUICK_TRAIN])
    assert result.exit_code == 1 and "out of memory" in result.output, result.output
    assert _hashes(run) == earlier and not list(run.glob(".*replaced-*"))
