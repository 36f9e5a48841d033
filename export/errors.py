"""Export errors: ExportError for a failed export, ParityError for outputs that miss their tolerance."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from core.errors import ToolkitError

if TYPE_CHECKING:
    from runtimes.parity import ParityReport


class ExportError(ToolkitError):
    """The checkpoint could not be exported, or the ONNX file is invalid."""


class ParityError(ToolkitError):
    """A model's outputs missed the tolerance; ``report`` says where and by how much.

    ``reports`` holds every comparison that ran (random inputs and images, passed or not) and ``accuracy`` the
    validation accuracies when images were available, so a caller can render the whole table of what missed.
    """

    def __init__(self, message: str, report: "ParityReport", reports: Sequence["ParityReport"] = (),
                 accuracy: dict | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.reports = tuple(reports) or (report,)
        self.accuracy = accuracy
