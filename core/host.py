"""Host facts and process settings: device resolution, usable cores, native bf16, malloc tuning, torch threads."""
from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
from typing import TYPE_CHECKING, Iterable, Iterator

from core.errors import UnavailableError, UsageError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h); mallopt's value argument is a C int.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_INT_MAX = 2**31 - 1


def resolve_device(name: str) -> "torch.device":
    """``auto`` → the first CUDA GPU if there is one, else the CPU.

    Raises:
        UsageError: a name that is no device (``gpu``, ``cuda:x``).
        UnavailableError: CUDA asked for on a machine without it (or a GPU index that is not there).
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UnavailableError(f"--device {name}: no CUDA GPU is available here (torch.cuda.is_available() is "
                                   "False); use --device cpu or --device auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UnavailableError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {name!r}; expected auto, cpu, cuda or cuda:N")
    return device


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), which a container may limit below os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# The instruction sets that decide which kernels the runtimes pick for this model: a host with AMX has ~2x the int8
# GEMM ceiling of one with AVX512-VNNI alone, so a figure means little without them (docs/performance.md).
MATRIX_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8",
                   "amx_bf16", "amx_fp16")


@functools.cache
def cpu_features() -> tuple[str, ...]:
    """The entries of :data:`MATRIX_FEATURES` this CPU reports in /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return matrix_features(f)
    except OSError:
        return ()


def matrix_features(cpuinfo: Iterable[str]) -> tuple[str, ...]:
    """The :data:`MATRIX_FEATURES` on the first ``flags`` line of /proc/cpuinfo's text, in that order."""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []))
    return tuple(name for name in MATRIX_FEATURES if name in flags)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features()))


@functools.cache
def tune_allocator() -> bool:
    """Keep freed activation buffers in the heap instead of unmapping them on every free (glibc only).

    With glibc's defaults every tensor over the dynamic mmap threshold is mmap'd and unmapped per step: ~150k page
    faults and 30–50 % of torch's eager step time on this model. Raising the mmap and trim thresholds removes that
    without preloading tcmalloc. A process-wide setting: only the command-line entry point (and benchmarks) call it.
    Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux") or os.environ.get("ALEXNET_DEPLOY_NO_MALLOPT"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
              and libc.mallopt(_M_TOP_PAD, 64 << 20) == 1)
    except (OSError, AttributeError):
        return False
    log.debug("glibc malloc thresholds raised: %s", ok)
    return ok


def allocator_tuned() -> bool:
    """Whether :func:`tune_allocator` has run in this process (for reports; it never tunes by itself)."""
    return tune_allocator.cache_info().currsize > 0 and tune_allocator()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block with torch's intra-op thread count at ``threads`` (None = the usable cores), then restore it."""
    import torch

    before = torch.get_num_threads()
    wanted = threads or usable_cores()
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(before)


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies, even by kill -9 (Linux ``PR_SET_PDEATHSIG``), so
    data workers and helper processes never outlive a killed run. Returns whether it was set."""
    if not sys.platform.startswith("linux"):
        return False
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def environ_set(**values: str) -> Iterator[None]:
    """Set environment variables for a block (e.g. for child processes it starts), then restore the old values."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
