"""The runtimes by name. Adapter modules are imported on first use, so listing names costs nothing."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from runtimes.errors import BenchError

if TYPE_CHECKING:  # importing the adapters (numpy, torch) is deferred so `cli.py --help` stays fast
    from runtimes.base import Runtime

# Order = the order of `bench --runtime all` (the reference first).
_ADAPTERS = {
    "torch": ("runtimes.torch_runtime", "TorchRuntime"),
    "onnxruntime": ("runtimes.ort_runtime", "OrtRuntime"),
    "onnxruntime-cuda": ("runtimes.ort_cuda_runtime", "OrtCudaRuntime"),
    "tensorrt": ("runtimes.trt_runtime", "TensorRTRuntime"),
}
RUNTIME_NAMES: tuple[str, ...] = tuple(_ADAPTERS)


def get_runtime_class(name: str) -> "type[Runtime]":
    """The adapter class registered as ``name``.

    Raises:
        BenchError: an unknown name (the message lists the registered ones).
    """
    try:
        module, cls = _ADAPTERS[name]
    except KeyError:
        raise BenchError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIME_NAMES)}") from None
    return getattr(importlib.import_module(module), cls)


def availability(name: str) -> tuple[bool, str]:
    """``(ok, reason)`` for a registered runtime; never raises ImportError."""
    return get_runtime_class(name).is_available()


def available_runtimes() -> dict[str, tuple[bool, str]]:
    return {name: availability(name) for name in RUNTIME_NAMES}
