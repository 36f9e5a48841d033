"""Logits of the PyTorch reference and of an ONNX file on the same images, and the task-level comparison of the two."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from export.images import ImageSet

BATCH = 32  # evaluation batch size (a static-batch graph uses its own)


@dataclass(frozen=True)
class Comparison:
    """A candidate's logits against the reference's on labelled images."""
    reference_accuracy: float
    accuracy: float
    agreement: float          # share of images whose top-1 class equals the reference's
    logit_error: float        # mean over images of |candidate - reference| / |reference| (L2 norms)
    images: int

    @property
    def drop_points(self) -> float:
        """Accuracy lost against the reference, in percentage points (negative: a gain)."""
        return (self.reference_accuracy - self.accuracy) * 100

    def to_dict(self) -> dict:
        return {"accuracy": round(self.accuracy, 6), "reference_accuracy": round(self.reference_accuracy, 6),
                "drop_points": round(self.drop_points, 4), "agreement": round(self.agreement, 6),
                "logit_error": round(self.logit_error, 6), "images": self.images}


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> Comparison:
    norms = np.maximum(np.linalg.norm(reference, axis=1), 1e-12)
    return Comparison(float(np.mean(reference.argmax(1) == labels)), float(np.mean(candidate.argmax(1) == labels)),
                      float(np.mean(candidate.argmax(1) == reference.argmax(1))),
                      float(np.mean(np.linalg.norm(candidate - reference, axis=1) / norms)), len(labels))


def torch_logits(model, data: ImageSet) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(torch.from_numpy(b)).numpy() for b in data.batches(BATCH)])


def onnx_logits(runtime, data: ImageSet, input_name: str, output_name: str,
                static_batch: int | None = None) -> tuple[np.ndarray, float | None]:
    """The runtime's logits on ``data`` (a static graph gets zero-padded batches of its size) and its img/s: the
    median of the full-size calls made meanwhile (None with fewer than two), a rough figure, not a benchmark."""
    outputs, seconds = [], []
    size = static_batch or BATCH
    for batch in data.batches(size):
        n = len(batch)
        if static_batch is not None and n < static_batch:
            batch = np.concatenate([batch, np.zeros((static_batch - n, *batch.shape[1:]), np.float32)])
        start = time.perf_counter()
        outputs.append(runtime.infer({input_name: batch})[output_name][:n])
        if n == size:
            seconds.append(time.perf_counter() - start)
    speed = size / statistics.median(seconds[1:]) if len(seconds) > 2 else None  # the first call warms up
    return np.concatenate(outputs), speed
