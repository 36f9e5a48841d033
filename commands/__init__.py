"""The command-line commands (click only: options → config → one library call → render), one module each, and
the one table of exit codes that cli.py applies to every command."""
from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INCONCLUSIVE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def exit_code(error: Exception) -> int:
    """The exit code of a toolkit error: usage 2, not available here 3, Ctrl-C 130, anything else 1."""
    from core.errors import Interrupted, UnavailableError, UsageError

    if isinstance(error, Interrupted):
        return EXIT_INTERRUPTED
    if isinstance(error, UnavailableError):
        return EXIT_UNAVAILABLE
    if isinstance(error, UsageError):
        return EXIT_USAGE
    return getattr(error, "exit_code", EXIT_FAILED)  # a failed torchrun worker passes its own status on
