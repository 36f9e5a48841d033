"""LoadGen's query sample library: the model's real validation images when its data is still there, else seeded
inputs; and the reference top-1 of each sample the responses are checked against."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from core.contract import INPUT_SHAPE
from core.onnx_file import OnnxInfo
from deploy.inputs import infer_in_chunks, random_batch
from deploy.models import CheckpointMismatchError, reference_model, reference_runtime
from runtimes.options import RuntimeOptions
from runtimes.registry import create_runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleSet:
    """The samples LoadGen indexes, their labels (real images) and the reference's top-1 class of each."""
    samples: np.ndarray
    labels: np.ndarray | None
    source: str                          # where the samples came from, for the report
    real: bool                           # validation images (True) or seeded random inputs
    reference_top1: np.ndarray
    reference: str                       # what computed reference_top1

    def to_dict(self) -> dict[str, Any]:
        return {"samples": int(len(self.samples)), "real_images": self.real, "source": self.source,
                "labels": self.labels is not None, "reference": self.reference,
                "reference_accuracy": (float(np.mean(self.reference_top1 == self.labels))
                                       if self.labels is not None else None)}


def load_sample_set(infos: Sequence[OnnxInfo], count: int, seed: int = 0) -> SampleSet:
    """``count`` samples for the QSL and their reference top-1.

    Real images: the validation split of the data the first file's metadata names (the exporter's rule, so bench,
    export and this see the same images), with labels. Otherwise fixed-seed N(0, 1) inputs, without labels. The
    reference is PyTorch fp32 on the checkpoint the metadata names (eager, TF32 off), else ONNX Runtime on the first
    fp32 file given, else ONNX Runtime on the first file.
    """
    first = infos[0]
    shape = tuple(first.inputs[0].shape[1:])
    images, why = None, "the ONNX file carries no alexnet-deploy metadata"
    if first.meta is not None and shape == INPUT_SHAPE:
        from export.images import DataSource, validation_images

        images, why = validation_images(DataSource.from_onnx(first.meta), count)
    elif first.meta is not None:
        why = f"the model input {shape} is not {INPUT_SHAPE}"
    if images is not None:
        samples, labels, real, source = images.tensors.astype(np.float32, copy=False), images.labels, True, why
    else:
        samples, labels, real = random_batch(shape, count, seed), None, False
        why = why.removeprefix("real-image checks skipped: ")
        source = f"{count} seeded random inputs (N(0, 1), seed {seed}); no real images: {why}"
    top1, reference = _reference_top1(infos, samples)
    log.info("QSL: %s; reference: %s", source, reference)
    return SampleSet(samples, labels, source, real, top1, reference)


def _reference_top1(infos: Sequence[OnnxInfo], samples: np.ndarray) -> tuple[np.ndarray, str]:
    first = infos[0]
    try:
        torch_model, why = reference_model(first.meta)
    except CheckpointMismatchError as e:
        torch_model, why = None, str(e).split(":")[0]
    if torch_model is not None:
        from core.host import torch_threads

        with torch_threads(None), reference_runtime(torch_model, first, RuntimeOptions()) as rt:
            logits = infer_in_chunks(rt, samples, 32)[first.outputs[0].name]
        return logits.argmax(1), f"PyTorch fp32 on {torch_model.path}"
    fp32 = next((i for i in infos if i.precision == "fp32"), first)
    with create_runtime("onnxruntime", fp32.path, RuntimeOptions()) as rt:
        logits = infer_in_chunks(rt, samples.astype(fp32.inputs[0].dtype, copy=False), 32)[fp32.outputs[0].name]
    return logits.argmax(1), f"onnxruntime on {fp32.path.name} ({fp32.precision}; no PyTorch reference: {why})"
