"""Task-level parity: each runtime × precision on the validation images, judged by what a user sees (top-1)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.onnx_file import read_onnx_info
from deploy.inputs import infer_in_chunks
from deploy.models import TorchModel, make_runtime, reference_runtime
from export.images import DataSource, ImageSet, validation_images
from export.spec import accuracy_budget, tolerance_for
from runtimes.options import RuntimeOptions
from runtimes.parity import ParityReport, compare_outputs

log = logging.getLogger(__name__)
REFERENCE = "torch"  # the PyTorch fp32 checkpoint every row is compared with


@dataclass(frozen=True)
class TaskParity:
    """One runtime × precision on the validation images, against their labels and against PyTorch fp32."""
    runtime: str
    precision: str
    images: int
    accuracy: float                  # top-1 vs the labels, 0–1
    reference_accuracy: float        # PyTorch fp32 top-1 on the same images
    agreement: float                 # share of images whose top-1 class equals PyTorch fp32's
    max_accuracy_drop: float         # percentage points this precision may lose (export.spec.accuracy_budget)
    parity: ParityReport | None      # logits vs PyTorch fp32 on these images; None for the reference itself

    @property
    def accuracy_delta(self) -> float:
        """Accuracy minus PyTorch fp32's, in percentage points (negative = worse)."""
        return (self.accuracy - self.reference_accuracy) * 100

    @property
    def passed(self) -> bool:
        return (self.parity is None or self.parity.passed) and -self.accuracy_delta <= self.max_accuracy_drop + 1e-9

    def failures(self) -> list[str]:
        out = [] if self.parity is None or self.parity.passed else [f"logit parity on images: {self.parity}"]
        if -self.accuracy_delta > self.max_accuracy_drop + 1e-9:
            out.append(f"accuracy {self.accuracy:.2%} is {-self.accuracy_delta:.2f} points below PyTorch fp32's "
                       f"{self.reference_accuracy:.2%} (allowed: {self.max_accuracy_drop:.2f})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "precision": self.precision, "images": self.images,
                "accuracy": self.accuracy, "reference_accuracy": self.reference_accuracy,
                "agreement": self.agreement, "accuracy_delta_points": self.accuracy_delta,
                "max_accuracy_drop_points": self.max_accuracy_drop, "passed": self.passed,
                "parity": self.parity.to_dict() if self.parity else None}

    def __str__(self) -> str:
        return (f"{'PASS' if self.passed else 'FAIL'} {self.runtime} {self.precision} on {self.images} images: top-1 "
                f"{self.accuracy:.2%} ({self.accuracy_delta:+.2f} points vs PyTorch fp32), agreement "
                f"{self.agreement:.2%}")


def load_task_images(meta: dict[str, Any], limit: int | None = None) -> tuple[ImageSet | None, str]:
    """The checkpoint's validation split (all of it, or ``limit`` images spread over it), preprocessed for eval, and
    a note on where it came from (or why there is none)."""
    return validation_images(DataSource.from_checkpoint(meta), limit)


def reference_logits(torch_model: TorchModel, onnx_path: str | os.PathLike, images: ImageSet,
                     options: RuntimeOptions, chunk: int) -> np.ndarray:
    """PyTorch fp32 logits of ``images`` (eager, TF32 off), with the I/O names of ``onnx_path``."""
    info = read_onnx_info(onnx_path)
    with reference_runtime(torch_model, info, options) as ref:
        return infer_in_chunks(ref, images.tensors, chunk)[info.outputs[0].name]


def evaluate_runtime(name: str, onnx_path: str | os.PathLike, torch_model: TorchModel, images: ImageSet,
                     reference: np.ndarray, options: RuntimeOptions, batch_sizes: tuple[int, ...]) -> TaskParity:
    """Run runtime ``name`` on ``onnx_path`` over ``images``; compare with the labels and the PyTorch fp32 logits.

    Args:
        name: A runtime registry name; ``torch`` in fp32 is the reference itself (its row needs no second run).
        onnx_path: The ONNX file the runtime runs (for torch: only its I/O names are used).
        torch_model: The PyTorch checkpoint (for the torch runtime).
        images: Validation images with labels.
        reference: PyTorch fp32 logits of ``images`` (``reference_logits``).
        options: Runtime settings, as in the bench (``options.precision`` bf16 runs the fp32 file in bf16).
        batch_sizes: The bench's batch sizes; images go through in chunks of the largest (TensorRT's profile
            covers it).

    Raises:
        ToolkitError: the runtime failed to load or run.
    """
    labels = images.labels
    reference_top1 = reference.argmax(1)
    reference_accuracy = float(np.mean(reference_top1 == labels))
    if name == REFERENCE and options.precision is None:
        # The benchmarked torch runtime is built like the reference (eager, no TF32): its predictions are the
        # reference's, so running every image through it again would only measure the same thing twice.
        return TaskParity(name, "fp32", len(images), reference_accuracy, reference_accuracy, 1.0, 0.0, None)
    info = read_onnx_info(onnx_path)
    with make_runtime(name, onnx_path, info, torch_model, options, batch_sizes) as rt:
        logits = infer_in_chunks(rt, images.tensors, max(batch_sizes))[info.outputs[0].name]
        precision = rt.precision
    parity = compare_outputs({"logits": reference}, {"logits": logits.astype(np.float32)},
                             tolerance_for(precision, "images"), reference_name="torch fp32",
                             candidate_name=f"{name} {precision}", inputs="images")
    top1 = logits.argmax(1)
    result = TaskParity(name, precision, len(images), float(np.mean(top1 == labels)), reference_accuracy,
                        float(np.mean(top1 == reference_top1)), accuracy_budget(precision, len(images)), parity)
    log.info("task parity: %s", result)
    return result
