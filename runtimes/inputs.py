"""Inputs for bench and parity: fixed-seed random batches and, when the training data is still there, real images."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from export.metadata import OnnxMeta

log = logging.getLogger(__name__)


def random_batch(sample_shape: Sequence[int], batch_size: int, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """N(0, 1) values of shape ``(batch_size, *sample_shape)``: roughly what normalised images look like."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((batch_size, *sample_shape), dtype=np.float32).astype(dtype, copy=False)


def real_images(meta: OnnxMeta | None, sample_shape: Sequence[int], limit: int = 64) -> tuple[np.ndarray | None, str]:
    """Up to ``limit`` validation images, preprocessed as in evaluation, or ``(None, why not)``.

    The images come from ``meta.data_path`` split with ``meta.val_split`` / ``meta.seed`` (the training split) and
    are transformed with ``eval_transform(meta.mean, meta.std)``.
    """
    if limit <= 0:
        return None, ""  # asked for (--images 0): nothing to note
    if meta is None or not meta.data_path:
        return None, "real-image parity skipped: the ONNX metadata names no data folder"
    if not Path(meta.data_path).is_dir():
        return None, f"real-image parity skipped: data folder {meta.data_path} not found"
    from trainer.data import eval_transform, find_split, load_rgb
    from trainer.errors import DataError
    from trainer.model import INPUT_SHAPE

    if tuple(sample_shape) != tuple(INPUT_SHAPE):
        return None, f"real-image parity skipped: the model input {tuple(sample_shape)} is not {tuple(INPUT_SHAPE)}"
    try:
        split = find_split(meta.data_path, meta.val_split or 0.2, meta.seed or 0, skip_bad_images=True)
    except DataError as e:
        return None, f"real-image parity skipped: {e}"
    transform = eval_transform(meta.mean, meta.std)
    samples = split.val[:: max(1, len(split.val) // limit)][:limit]  # spread over the classes
    batch = np.stack([transform(load_rgb(path)).numpy() for path, _ in samples]).astype(np.float32)
    return batch, f"{len(batch)} validation images from {meta.data_path}"
