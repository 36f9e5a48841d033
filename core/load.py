"""What else the machine was doing while something was measured: other processes' CPU share, stolen time, load.

Linux only (/proc/stat); elsewhere every figure is None and nothing is ever called busy.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.host import usable_cores

BUSY_SHARE = 0.10   # other processes (or the hypervisor, as steal) used more than 10 % of the CPUs: a busy machine


@dataclass(frozen=True)
class CpuTimes:
    """A reading of the machine's and this process's CPU time, in seconds since boot / process start."""
    wall: float
    busy: float | None      # every CPU's non-idle time but steal (guests are in user/nice); None without /proc/stat
    steal: float | None     # time the hypervisor gave these CPUs to someone else
    own: float              # this process and its finished children (a tool run as a subprocess is no foreign load)

    @classmethod
    def now(cls) -> "CpuTimes":
        busy, steal = _proc_stat()
        t = os.times()
        return cls(time.perf_counter(), busy, steal, t.user + t.system + t.children_user + t.children_system)


@dataclass(frozen=True)
class LoadShare:
    """Between two readings: the share of the machine's CPUs (0..1) used by other processes and stolen."""
    seconds: float
    other_share: float | None
    steal_share: float | None

    @classmethod
    def between(cls, start: CpuTimes, end: CpuTimes) -> "LoadShare":
        wall = max(end.wall - start.wall, 1e-9)
        cpus = os.cpu_count() or 1   # /proc/stat counts every CPU of the machine, not only ours
        if start.busy is None or end.busy is None:
            return cls(wall, None, None)
        other = max(0.0, (end.busy - start.busy) - (end.own - start.own)) / (wall * cpus)
        steal = max(0.0, (end.steal or 0.0) - (start.steal or 0.0)) / (wall * cpus)
        return cls(wall, min(other, 1.0), min(steal, 1.0))

    @property
    def busy(self) -> bool:
        return (self.other_share or 0.0) + (self.steal_share or 0.0) > BUSY_SHARE

    def to_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1), "other_processes_cpu_share": _round(self.other_share),
                "steal_share": _round(self.steal_share), "busy": self.busy}


class LoadMonitor:
    """Reads the machine's load around a measurement and per stretch of it (``mark`` after each timed round).

    ``summary()`` gives the whole run's shares, the worst stretch and the load averages at start and end, and a
    warning when other work took more than BUSY_SHARE of the CPUs.
    """

    def __init__(self, canary: bool = False) -> None:
        self.start = self.last = CpuTimes.now()
        self.start_loadavg = _loadavg()
        self.stretches: list[LoadShare] = []
        self.canary_ms: list[list[float]] | None = [] if canary else None

    def mark(self) -> LoadShare:
        now = CpuTimes.now()
        share = LoadShare.between(self.last, now)
        self.stretches.append(share)
        if self.canary_ms is not None:  # after the stretch is read: the canary is this process's own time
            self.canary_ms.append(host_canary_ms())
        self.last = CpuTimes.now()
        return share

    def summary(self) -> dict[str, Any]:
        whole = LoadShare.between(self.start, CpuTimes.now())
        shares = [s.other_share for s in self.stretches if s.other_share is not None]
        out = {"seconds": round(whole.seconds, 3), "other_processes_cpu_share": _round(whole.other_share),
               "steal_share": _round(whole.steal_share), "worst_round_other_share": _round(max(shares, default=None)),
               "load_average_1min": {"start": self.start_loadavg, "end": _loadavg()},
               "cpus": os.cpu_count(), "usable_cores": usable_cores(), "busy": whole.busy, "warning": None}
        if self.canary_ms:
            out["host_canary"] = {"what": CANARY_WHAT, "rounds_ms": self.canary_ms,
                                  "p50_ms": round(statistics.median(v for r in self.canary_ms for v in r), 4)}
        if whole.busy:
            out["warning"] = (f"the machine was busy while measuring: other processes used "
                              f"{whole.other_share or 0:.0%} of the CPUs and {whole.steal_share or 0:.0%} was "
                              "stolen by the hypervisor; figures are slower and noisier than on a quiet machine")
        return out


CANARY_WHAT = "numpy sort of 300,000 seeded float32 values, one thread, 3 calls after each round"
_CANARY = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)


def host_canary_ms(calls: int = 3) -> list[float]:
    """A fixed single-threaded computation (~8 ms on this project's machine) timed ``calls`` times: the host's own
    speed beside a measurement, so a comparison of two runs can tell a slower host (another VM, a lower clock,
    nothing this machine's process table shows) from slower code."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        np.sort(_CANARY, kind="quicksort")
        times.append(round((time.perf_counter() - start) * 1e3, 4))
    return times


class LoadWindow:
    """``with LoadWindow() as w: ...`` then ``w.foreign``: the share of the CPUs other processes (and the hypervisor)
    used during the block."""

    def __enter__(self) -> "LoadWindow":
        self.start = CpuTimes.now()
        return self

    def __exit__(self, *exc: object) -> None:
        share = LoadShare.between(self.start, CpuTimes.now())
        self.foreign = (share.other_share or 0.0) + (share.steal_share or 0.0)


def wait_for_quiet(limit_s: float, threshold: float = BUSY_SHARE, step_s: float = 0.5) -> bool:
    """Sleep in ``step_s`` steps until other processes use less than ``threshold`` of the CPUs; False if ``limit_s``
    ran out first."""
    deadline = time.perf_counter() + limit_s
    while time.perf_counter() < deadline:
        with LoadWindow() as window:
            time.sleep(step_s)
        if window.foreign < threshold:
            return True
    return False


def _proc_stat() -> tuple[float | None, float | None]:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None, None
    tick = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal (guest, guest_nice are already in user and nice); steal is
    # counted apart: it is the hypervisor's other tenants, not this machine's processes
    busy = sum(fields[:7]) - fields[3] - fields[4]
    return busy / tick, (fields[7] if len(fields) > 7 else 0) / tick


def _loadavg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
