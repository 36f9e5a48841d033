"""The trainer's device choices: the mixed-precision dtype and the number of data-loading workers."""
from __future__ import annotations


import torch

from core.errors import UnavailableError, UsageError
from core.host import cpu_has_native_bf16, usable_cores


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
            raise UnavailableError("--amp fp16 needs a CUDA device; on the CPU use --amp bf16 or --amp off")
        return torch.float16
    raise UsageError(f"unknown --amp {amp!r}; expected auto, off, bf16 or fp16")


def default_workers(processes: int = 1) -> int:
    """DataLoader workers per training process: decoding + augmentation costs ~1.5 ms per image per core, so one
    worker per two cores keeps up with training while leaving the compute threads their cores. ``processes``
    training processes on this machine (data-parallel) share the cores."""
    return max(1, min(4, usable_cores() // 2 // processes))
