"""Runtime errors: unavailable runtimes, bad options, mismatched inputs, load/build and inference failures."""
from __future__ import annotations

from core.errors import ToolkitError, UnavailableError, UsageError


class RuntimeUnavailableError(UnavailableError):
    """The runtime cannot run on this machine (package missing, no GPU); the message says how to fix it."""


class RuntimeOptionError(UsageError):
    """An adapter option with no meaning (an unknown name, level or precision); the message lists the valid ones."""


class InputMismatchError(ToolkitError, ValueError):
    """Feeds whose names, dtypes or shapes do not match the runtime's ``input_specs()``."""


class RuntimeStateError(ToolkitError, RuntimeError):
    """A runtime used out of order, e.g. ``infer`` before ``load`` or after ``close``."""


class RuntimeLoadError(ToolkitError):
    """The model could not be loaded, parsed or built by an available runtime (a real failure, not a skip)."""


class InferenceError(ToolkitError):
    """A loaded runtime failed to run an inference (e.g. TensorRT's execute_async_v3 returned False)."""
