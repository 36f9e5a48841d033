"""The toolkit's error base and its three kinds of failure; cli.py maps each to one exit code."""


class ToolkitError(Exception):
    """An expected failure with a message meant for the user (no traceback needed): a bad file, a failed check."""


class UsageError(ToolkitError):
    """An option or setting out of range (a NaN learning rate, an unknown runtime option): the user's call to fix."""


class UnavailableError(ToolkitError):
    """Something this machine cannot do (no GPU, a runtime not installed); the message says how to fix it."""


class Interrupted(ToolkitError):
    """The user pressed Ctrl-C; what finished is saved (the message says where)."""


def first_line(e: BaseException) -> str:
    """An exception's first line of text (library errors can run to pages), or its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
