"""The toolkit's error base. Every package's errors derive from it; only cli.py maps them to exit codes."""


class ToolkitError(Exception):
    """An expected failure with a message meant for the user (no traceback needed)."""


class DataError(ToolkitError):
    """The image folder is missing, empty, unreadable or unusable for training."""


class CheckpointError(ToolkitError):
    """A checkpoint or run folder is missing, corrupt, or does not match its metadata."""


class InputShapeError(ToolkitError, ValueError):
    """A tensor fed to the model does not have the shape AlexNet requires."""


class OutputExistsError(ToolkitError):
    """The output folder already holds a run, and replacing it was not asked for."""


class TrainingDivergedError(ToolkitError):
    """The loss became NaN or infinite."""


def first_line(e: BaseException) -> str:
    """An exception's first line of text (library errors can run to pages), or its type when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
