"""The machine-load readings stored with every bench: other processes' share, steal, the busy warning."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from core.load import BUSY_SHARE, CpuTimes, LoadMonitor, LoadShare, LoadWindow


def test_other_processes_share_is_the_machines_busy_time_minus_our_own():
    cpus = os.cpu_count() or 1
    start = CpuTimes(wall=0.0, busy=100.0, steal=5.0, own=10.0)
    # 2 s of wall time: the machine was busy 1.5 CPU-seconds more, 0.5 of them ours; 0.2 s stolen
    end = CpuTimes(wall=2.0, busy=101.5, steal=5.2, own=10.5)
    share = LoadShare.between(start, end)
    assert share.other_share == pytest.approx(1.0 / (2.0 * cpus))
    assert share.steal_share == pytest.approx(0.2 / (2.0 * cpus))
    assert share.busy == (share.other_share + share.steal_share > BUSY_SHARE)
    # Our own work is never someone else's: a reading where we did all of it gives 0.
    assert LoadShare.between(start, CpuTimes(2.0, 101.0, 5.0, 11.0)).other_share == 0.0


def test_without_proc_stat_nothing_is_called_busy():
    share = LoadShare.between(CpuTimes(0.0, None, None, 0.0), CpuTimes(1.0, None, None, 0.5))
    assert share.other_share is None and not share.busy


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads /proc/stat (Linux)")
def test_a_process_spinning_beside_us_is_seen_and_warned_about():
    spinner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
    try:
        time.sleep(0.3)  # let it start
        monitor = LoadMonitor()
        with LoadWindow() as window:
            time.sleep(1.0)
        monitor.mark()
        summary = monitor.summary()
    finally:
        spinner.kill()
        spinner.wait()
    one_cpu = 1 / (os.cpu_count() or 1)
    assert window.foreign > 0.5 * one_cpu
    assert summary["other_processes_cpu_share"] > 0.5 * one_cpu and summary["worst_round_other_share"] > 0.5 * one_cpu
    if summary["busy"]:
        assert "the machine was busy while measuring" in summary["warning"]
