"""The trainer's errors (data, checkpoints, run folders, divergence, interruption), all ToolkitErrors."""
from core.errors import Interrupted, ToolkitError


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


class TrainingInterrupted(Interrupted):
    """Ctrl-C: the last finished epoch is saved and the run can be resumed."""
