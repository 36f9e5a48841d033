"""scripts/gpu_check.sh on a machine where it cannot check anything: it says why, exits 3 and claims nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"

pytestmark = pytest.mark.slow  # launches the script and its probe subprocess


def _run(out: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, env=environment,
                          timeout=300, check=False)


def _assert_claims_nothing(out: Path, result: subprocess.CompletedProcess, status: str) -> None:
    assert result.returncode == 3, result.stdout + result.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == status
    assert "nothing was checked" in result.stdout
    assert "passed" not in result.stdout and "target" not in result.stdout
    assert {p.name for p in out.iterdir()} <= {"summary.txt", "summary.json", "env.log"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the check would run for real")
def test_without_a_gpu_it_says_so_and_exits_3(tmp_path):
    result = _run(tmp_path / "out")
    _assert_claims_nothing(tmp_path / "out", result, "no gpu")
    assert "no CUDA GPU here (torch.cuda.is_available() is False)" in result.stdout


def test_a_broken_environment_is_named_not_reported_as_no_gpu(tmp_path):
    # A torch module that cannot be imported, first on the path the script builds from GPU_CHECK_SITE.
    site = tmp_path / "site"
    site.mkdir()
    (site / "torch.py").write_text("raise ImportError('planted: this torch is broken')\n")
    result = _run(tmp_path / "out", GPU_CHECK_SITE=str(site))
    _assert_claims_nothing(tmp_path / "out", result, "probe failed")
    assert "environment probe failed (ImportError: planted: this torch is broken" in result.stdout
    assert "no CUDA GPU" not in result.stdout
