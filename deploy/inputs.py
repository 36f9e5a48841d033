"""Inputs for bench and parity: fixed-seed random batches and the model's validation images; chunked inference."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from core.contract import INPUT_SHAPE, TensorSpec
from core.errors import UsageError
from core.onnx_file import OnnxMeta
from runtimes.base import Runtime


def random_batch(sample_shape: Sequence[int], batch_size: int, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """N(0, 1) values of shape ``(batch_size, *sample_shape)``: roughly what normalised images look like."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, *sample_shape), dtype=np.float32).astype(dtype, copy=False)


def make_feeds(specs: Sequence[TensorSpec], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Fixed-seed random feeds for every input at ``batch``.

    Raises:
        UsageError: an input with a dynamic dimension other than the batch (nothing says what size to feed).
    """
    feeds = {}
    for i, spec in enumerate(specs):
        if any(d is None for d in spec.shape[1:]):
            raise UsageError(f"input {spec.name!r} {spec.shape_str()}: only the batch dimension may be dynamic")
        feeds[spec.name] = random_batch(spec.shape[1:], batch, seed + 1000 * i, spec.dtype)
    return feeds


def infer_in_chunks(rt: Runtime, x: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    """Run a single-input runtime over ``x`` in batches of ``chunk`` and concatenate the outputs."""
    specs = rt.input_specs()
    if len(specs) != 1:
        raise UsageError(f"parity feeds single-input models; {rt.name} has {len(specs)} inputs")
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), chunk):
        for name, value in rt.infer({specs[0].name: x[i:i + chunk].astype(specs[0].dtype, copy=False)}).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def real_images(meta: OnnxMeta | None, sample_shape: Sequence[int], limit: int) -> tuple[np.ndarray | None, str]:
    """Up to ``limit`` validation images of the data the ONNX metadata names (export.images picks them, so bench and
    export see the same images), or ``(None, why not)``."""
    if limit <= 0:
        return None, ""  # asked for (--images 0): nothing to note
    if meta is None:
        return None, "real-image parity skipped: the ONNX file carries no alexnet-deploy metadata"
    if tuple(sample_shape) != INPUT_SHAPE:
        return None, f"real-image parity skipped: the model input {tuple(sample_shape)} is not {INPUT_SHAPE}"
    from export.images import DataSource, validation_images

    images, note = validation_images(DataSource.from_onnx(meta), limit)
    return (images.tensors if images is not None else None), note
