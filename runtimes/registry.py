"""The one name → adapter map. Adapter modules are imported on first use, so listing names costs nothing.

Adding a runtime: write ``runtimes/<name>_runtime.py`` (a ``Runtime`` subclass with ``is_available`` and ``create``)
and add one line to ``_ADAPTERS``; bench, predict, pipeline, the report and the CLI pick it up from here.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Sequence

from runtimes.errors import RuntimeOptionError, RuntimeUnavailableError

if TYPE_CHECKING:  # importing the adapters (numpy, torch) is deferred so `cli.py --help` stays fast
    from core.contract import TensorSpec
    from runtimes.base import Runtime
    from runtimes.options import RuntimeOptions

# Order = the order of `bench --runtime all` and of the report (the PyTorch reference first).
_ADAPTERS = {
    "torch": "runtimes.torch_runtime:TorchRuntime",
    "onnxruntime": "runtimes.ort_runtime:OrtRuntime",
    "onnxruntime-cuda": "runtimes.ort_cuda_runtime:OrtCudaRuntime",
    "tensorrt": "runtimes.trt_runtime:TensorRTRuntime",
    "openvino": "runtimes.openvino_runtime:OpenVinoRuntime",
}
RUNTIME_NAMES: tuple[str, ...] = tuple(_ADAPTERS)


def runtime_class(name: str) -> "type[Runtime]":
    """The adapter class registered as ``name``.

    Raises:
        RuntimeOptionError: an unknown name (the message lists the registered ones).
    """
    try:
        module, cls = _ADAPTERS[name].split(":")
    except KeyError:
        raise RuntimeOptionError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIME_NAMES)}") from None
    return getattr(importlib.import_module(module), cls)


def availability(name: str, precision: str | None = None) -> tuple[bool, str]:
    """``(ok, reason)`` for a registered runtime (and, with ``precision``, for computing in it); never raises
    ImportError."""
    cls = runtime_class(name)
    ok, reason = cls.is_available()
    if ok and precision is not None:
        ok, reason = cls.supports(precision)
    return ok, reason


def create_runtime(name: str, model: Any, options: "RuntimeOptions", batch_sizes: Sequence[int] = (),
                   io: "tuple[TensorSpec, TensorSpec] | None" = None) -> "Runtime":
    """The adapter ``name`` for ``model``, unloaded.

    Args:
        name: A registry name.
        model: An ONNX path; for ``torch`` an nn.Module or a callable returning one.
        options: The adapter settings; ``options.precision`` (bf16) is refused here by a runtime that cannot
            compute it, never silently run in another precision.
        batch_sizes: The batch sizes it will run (TensorRT builds its profiles for them).
        io: The (input, output) specs of the graph a non-ONNX runtime stands in for (names, sample shape).

    Raises:
        RuntimeOptionError: an unknown name. RuntimeUnavailableError: a precision this runtime cannot compute.
    """
    cls = runtime_class(name)
    if options.precision is not None:
        ok, reason = cls.supports(options.precision)
        if not ok:
            raise RuntimeUnavailableError(f"{name}: {reason}")
    return cls.create(model, options, tuple(batch_sizes), io)


def runs_onnx(name: str) -> bool:
    """Whether the runtime runs the ONNX file (all but torch, which runs the PyTorch model)."""
    return runtime_class(name).runs_onnx
