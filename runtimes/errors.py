"""Runtime errors: unavailable runtimes, mismatched inputs, load/build failures and bad bench settings."""
from __future__ import annotations

from trainer.errors import ToolkitError

# cli.py's EXIT_UNAVAILABLE: CI can tell "this runtime cannot run here" from a failure.
EXIT_UNAVAILABLE = 3


class RuntimeUnavailableError(ToolkitError):
    """The runtime cannot run on this machine (package missing, no GPU); the message says how to fix it."""
    exit_code = EXIT_UNAVAILABLE


class InputMismatchError(ToolkitError, ValueError):
    """Feeds whose names, dtypes or shapes do not match the runtime's ``input_specs()``."""


class RuntimeStateError(ToolkitError, RuntimeError):
    """A runtime used out of order, e.g. ``infer`` before ``load`` or after ``close``."""


class RuntimeLoadError(ToolkitError):
    """The model could not be loaded, parsed or built by an available runtime (a real failure, not a skip)."""


class BenchError(ToolkitError):
    """The bench was asked for something it cannot do (e.g. the torch runtime without a checkpoint)."""


class InferenceError(ToolkitError):
    """A loaded runtime failed to run an inference (e.g. TensorRT's execute_async_v3 returned False)."""
