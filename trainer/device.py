"""Device, mixed-precision and allocator choices for training, decided once per process."""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys

import torch

from trainer.errors import ToolkitError

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h); mallopt's value argument is a C int.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_INT_MAX = 2**31 - 1


def resolve_device(name: str) -> torch.device:
    """``auto`` → the first CUDA GPU if there is one, else the CPU. Asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ToolkitError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ToolkitError(f"--device {name}: no CUDA GPU is available here (torch.cuda.is_available() is "
                               "False); use --device cpu or --device auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ToolkitError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu":
        raise ToolkitError(f"unsupported device {name!r}; expected auto, cpu, cuda or cuda:N")
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` on ``device``, or None for plain fp32.

    ``auto`` uses bf16 on CUDA GPUs that support it (fp16 otherwise) and bf16 on CPUs with native bf16, where the
    convolutions and matmuls run ~2× faster than fp32; weights, the loss, LRN and the optimizer stay fp32.
    """
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise ToolkitError("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or --amp off")
        return torch.float16
    raise ToolkitError(f"unknown --amp {amp!r}; expected auto, off, bf16 or fp16")


@functools.cache
def tune_allocator() -> bool:
    """Keep freed activation buffers in the heap instead of unmapping them on every free (glibc only).

    With glibc's defaults every tensor over the dynamic mmap threshold is mmap'd and unmapped per step: ~150k page
    faults and 30–50 % of torch's eager step time on this model. Raising the mmap and trim thresholds removes that
    without preloading tcmalloc. Returns whether the settings were applied.
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


def default_workers(processes: int = 1) -> int:
    """DataLoader workers per training process: decoding + augmentation costs ~1.5 ms per image per core, so one
    worker per two cores keeps up with training while leaving the compute threads their cores. ``processes``
    training processes on this machine (data-parallel) share the cores."""
    return max(1, min(4, (os.cpu_count() or 2) // 2 // processes))
