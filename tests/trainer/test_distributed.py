"""Data-parallel training: N processes on batch B train like one process on batch N×B, and fail or stop together."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from trainer.config import TrainConfig
from trainer.data import AugmentConfig
from trainer.distributed import DistContext, env_context, rank_device
from core.errors import ToolkitError
from trainer.run import train

ROOT = Path(__file__).resolve().parents[2]
# Deterministic training: no augmentation, no dropout (its masks differ per rank), plain SGD (linear in the
# gradient, so float rounding in the all-reduce stays at rounding size; Adam would amplify it near zero gradients).
DETERMINISTIC = ["--epochs", "1", "--workers", "0", "--amp", "off", "--optimizer", "sgd", "--lr", "0.005",
                 "--dropout", "0", "--no-augment"]


def _config(data: Path, out: Path, batch_size: int, device: str = "cpu") -> TrainConfig:
    return TrainConfig(data=str(data), out=str(out), epochs=1, batch_size=batch_size, workers=0, amp="off",
                       optimizer="sgd", lr=0.005, dropout=0.0, augment=AugmentConfig(enabled=False), device=device)


def _cli_train(*args: str, launcher: tuple[str, ...] = (), timeout: int = 240,
               tmpdir: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmpdir)} if tmpdir else None
    return subprocess.run([sys.executable, *launcher, str(ROOT / "cli.py"), "train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_processes_train_like_one_process_on_their_global_batch(image_folder, tmp_path):
    run, scratch = tmp_path / "ddp", tmp_path / "tmp"
    scratch.mkdir()
    proc = _cli_train("--nproc-per-node", "2", "--device", "cpu", "--data", str(image_folder), "--out", str(run),
                      "--batch-size", "2", *DETERMINISTIC, tmpdir=scratch)
    assert proc.returncode == 0, proc.stderr
    assert not list(scratch.iterdir())  # torchrun's log folder is removed (it would leave one per run in /tmp)
    assert proc.stdout.count("Trained 1 epoch(s)") == 1, proc.stdout  # rank 0 alone reports
    assert "(gloo)" in proc.stderr
    meta = json.loads((run / "model.json").read_text())
    assert meta["distributed"] == {"world_size": 2, "global_batch_size": 4}

    one = train(_config(image_folder, tmp_path / "b4", batch_size=4), show_progress=False)
    half = train(_config(image_folder, tmp_path / "b2", batch_size=2), show_progress=False)
    assert one.meta["distributed"]["world_size"] == 1
    ddp_weights, one_weights = load_file(run / "model.safetensors"), load_file(one.weights)
    # 12 training images: each rank's 3 steps of 2 images form the lone process's 3 steps of 4 images.
    assert _max_diff(ddp_weights, one_weights) < 1e-5
    assert _max_diff(load_file(half.weights), one_weights) > 1e-3  # the bound tells batch 2 from batch 4
    # Metrics are summed over the ranks: 3 validation images split 2 + 1 still give the lone process's numbers.
    for key, value in one.history.rows[0].items():
        assert meta["final_metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_a_data_error_on_rank_0_stops_every_process_with_its_message(tmp_path):
    proc = _cli_train("--nproc-per-node", "2", "--device", "cpu", "--data", str(tmp_path / "missing"),
                      "--out", str(tmp_path / "run"), "--epochs", "1", "--workers", "0", timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count(f"Error: data folder not found: {tmp_path / 'missing'}") == 1  # rank 0 speaks for all
    assert "local_rank" not in proc.stderr  # torchrun's own log lines repeat it with pids
    assert "training process" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("environ, expected", [
    ({}, DistContext()),
    ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}, DistContext(4, 3, 1, 2)),
    ({"RANK": "1", "WORLD_SIZE": "2"}, DistContext(2, 1, 1, 2)),  # a hand-made env:// launch on one machine
])
def test_env_context_reads_torchruns_variables(environ, expected):
    assert env_context(environ) == expected


def test_env_context_rejects_malformed_variables():
    with pytest.raises(ToolkitError, match="must be integers"):
        env_context({"RANK": "zero", "WORLD_SIZE": "2"})


def test_each_local_process_gets_its_own_gpu_or_a_clear_error():
    two = DistContext(world_size=2, rank=1, local_rank=1, local_world_size=2)
    assert rank_device("cpu", two) == torch.device("cpu")
    with pytest.raises(ToolkitError, match="each process uses the GPU of its local rank|no CUDA GPU"):
        rank_device("cuda:0", two)
    with pytest.raises(ToolkitError, match="unknown device"):
        rank_device("tpu", two)
    if torch.cuda.device_count() >= 2:
        assert rank_device("cuda", two) == torch.device("cuda:1")
    else:
        with pytest.raises(ToolkitError, match="need one GPU each"):
            rank_device("cuda", two)
        if not torch.cuda.is_available():
            assert rank_device("auto", two) == torch.device("cpu")


def test_nproc_per_node_must_match_the_torchrun_launch(image_folder):
    from cli import main

    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}
    result = CliRunner().invoke(main, ["train", "--data", str(image_folder), "--nproc-per-node", "3"], env=env)
    assert result.exit_code == 2, result.output
    assert "torchrun started 2 processes" in result.output


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU (torch.cuda.is_available() is False)")
def test_data_parallel_on_gpus_matches_one_process_on_the_global_batch(image_folder, tmp_path):
    n = min(2, torch.cuda.device_count())  # one process per GPU; with one GPU, NCCL on a single rank
    run = tmp_path / "ddp"
    proc = _cli_train("--device", "cuda", "--data", str(image_folder), "--out", str(run), "--batch-size", "2",
                      *DETERMINISTIC, launcher=("-m", "torch.distributed.run", "--standalone",
                                                f"--nproc-per-node={n}"))
    assert proc.returncode == 0, proc.stderr
    assert "(nccl)" in proc.stderr
    meta = json.loads((run / "model.json").read_text())
    assert meta["distributed"] == {"world_size": n, "global_batch_size": 2 * n}
    one = train(_config(image_folder, tmp_path / "one", batch_size=2 * n, device="cuda"), show_progress=False)
    # cuDNN picks its algorithms per process: agreement to ~1e-4, not to the bit.
    assert _max_diff(load_file(run / "model.safetensors"), load_file(one.weights)) < 1e-3
    assert meta["final_metrics"]["loss"] == pytest.approx(one.history.rows[0]["loss"], rel=1e-3)
