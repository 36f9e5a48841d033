"""Real images for export: the checkpoint's validation split (parity, accuracy) and calibration images (int8)."""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.contract import INPUT_SHAPE
from export.errors import ExportError
from trainer.data import IMAGE_EXTENSIONS, eval_transform, find_split, image_files, load_rgb
from trainer.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed images (``N x 3 x 227 x 227`` float32, the eval transform) and their labels when known."""
    tensors: np.ndarray
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return int(self.tensors.shape[0])

    def batches(self, size: int, exact: bool = False) -> Iterator[np.ndarray]:
        """Consecutive batches of ``size``; ``exact`` (for a static-batch graph) repeats images to fill the last."""
        for start in range(0, len(self), size):
            batch = self.tensors[start:start + size]
            if exact and len(batch) < size:
                batch = np.concatenate([batch, self.tensors[np.arange(size - len(batch)) % len(self)]])
            yield batch


@dataclass(frozen=True)
class DataSource:
    """Where a model's training images are and how they were split: what both a checkpoint's and an ONNX file's
    metadata record, so the validation images are picked by one rule whichever file names them."""
    path: str | None
    val_split: float
    seed: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    @classmethod
    def from_checkpoint(cls, meta: dict[str, Any]) -> "DataSource":
        data = meta.get("data") or {}
        return cls(data.get("path"), float(data.get("val_split") or 0.2), int(data.get("seed") or 0),
                   tuple(meta["mean"]), tuple(meta["std"]), tuple(meta["class_names"]))

    @classmethod
    def from_onnx(cls, meta) -> "DataSource":
        """From ``core.onnx_file.OnnxMeta``."""
        return cls(meta.data_path, float(meta.val_split or 0.2), int(meta.seed or 0), tuple(meta.mean),
                   tuple(meta.std), tuple(meta.class_names))


def validation_images(source: DataSource, limit: int | None) -> tuple[ImageSet | None, str]:
    """Up to ``limit`` images (None = all) of the validation split, spread evenly over it (so over the classes),
    preprocessed as in evaluation, with their labels.

    Returns:
        The images and a note on where they came from, or None and why not (no data folder recorded, the folder is
        gone or unusable, or its classes differ from the model's, so labels would be wrong).
    """
    if limit is not None and limit <= 0:
        return None, ""
    split, why = _split(source)
    if split is None:
        return None, f"real-image checks skipped: {why}"
    if tuple(split.classes) != tuple(source.class_names):
        return None, (f"real-image checks skipped: the classes in {source.path} ({', '.join(split.classes)}) differ "
                      "from the model's")
    samples = _spread(split.val, len(split.val) if limit is None else limit)
    tensors = _load([path for path, _ in samples], source)
    note = f"{len(samples)} validation images from {source.path}"
    return ImageSet(tensors, np.array([label for _, label in samples]), note), note


def calibration_images(source: DataSource, directory: str | os.PathLike | None, count: int) -> ImageSet:
    """``count`` calibration images, loaded: from ``directory`` (any images below it), else the checkpoint's training
    images, else the built-in shapes data.

    Raises:
        ExportError: ``directory`` holds no readable image.
    """
    paths, where = _calibration_paths(source, directory)
    chosen = _spread(paths, count)
    tensors = _load(chosen, source, skip_bad=True)
    if len(tensors) == 0:
        raise ExportError(f"none of the {len(chosen)} calibration images from {where} could be read")
    log.info("calibrating int8 on %d images from %s", len(tensors), where)
    return ImageSet(tensors, None, f"{len(tensors)} images from {where}")


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration images named but not yet loaded: ``batches`` reads them as they are needed, so measuring how many
    images the ranges need costs only the images used. The order is a fixed shuffle of an even spread over the
    folder, so every prefix covers the classes."""
    paths: tuple[str, ...]
    where: str
    source: DataSource

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, size: int, exact: bool = False) -> Iterator[np.ndarray]:
        """Preprocessed batches of ``size`` (unreadable images skipped); ``exact`` fills the last one by repeating."""
        for start in range(0, len(self.paths), size):
            batch = _load(self.paths[start:start + size], self.source, skip_bad=True)
            if exact and 0 < len(batch) < size:
                batch = batch[np.arange(size) % len(batch)]
            if len(batch):
                yield batch


def calibration_set(source: DataSource, directory: str | os.PathLike | None, count: int) -> CalibrationSet:
    """Up to ``count`` calibration images, as :func:`calibration_images` picks them, checked by reading the first.

    Raises:
        ExportError: ``directory`` holds no readable image.
    """
    paths, where = _calibration_paths(source, directory)
    chosen = _spread(paths, count)
    chosen = [chosen[i] for i in np.random.default_rng(0).permutation(len(chosen))]
    for start in range(0, len(chosen), 8):  # fail now, not after the export, when nothing can be read
        if len(_load(chosen[start:start + 8], source, skip_bad=True)):
            log.info("calibrating int8 on up to %d images from %s", len(chosen), where)
            return CalibrationSet(tuple(chosen), where, source)
        if start >= 64:
            break
    raise ExportError(f"none of the first calibration images from {where} could be read")


def _calibration_paths(source: DataSource, directory: str | os.PathLike | None) -> tuple[list, str]:
    """Image paths under ``directory``, else the checkpoint's training images, else the built-in data."""
    if directory is not None:
        directory = Path(directory)
        paths = image_files(directory)
        if not paths:
            raise ExportError(f"no calibration images in {directory} (looked for {' '.join(IMAGE_EXTENSIONS)} "
                              "files in it and its subfolders)")
        return paths, str(directory)
    split, why = _split(source)
    if split is not None:
        return [p for p, _ in split.train], f"the training images in {source.path}"
    from trainer.synthetic import ensure_synthetic_dataset

    log.info("calibration: %s; using the built-in data", why)
    folder = ensure_synthetic_dataset()
    return image_files(folder), f"the built-in shapes data ({folder})"


def _split(source: DataSource):
    """The recorded split, or None and why not."""
    if not source.path:
        return None, "the model records no data folder"
    if not Path(source.path).is_dir():
        return None, f"the data folder {source.path} is gone"
    try:
        return _find_split(source.path, source.val_split, source.seed), ""
    except DataError as e:
        return None, f"cannot use the data in {source.path} ({e})"


@functools.lru_cache(maxsize=4)
def _find_split(path: str, val_split: float, seed: int):
    """find_split opens every image once; validation and calibration share the result within a process."""
    return find_split(path, val_split, seed, skip_bad_images=True)


def _spread(items: Sequence, count: int) -> list:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    index = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in index]


def _load(paths: Sequence[str], source: DataSource, skip_bad: bool = False) -> np.ndarray:
    transform = eval_transform(source.mean, source.std)
    tensors = []
    for path in paths:
        try:
            tensors.append(transform(load_rgb(path)).numpy())
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            if not skip_bad:
                raise ExportError(f"cannot read the image {path}: {e}") from None
            log.warning("skipping unreadable image %s", path)
    return np.stack(tensors).astype(np.float32) if tensors else np.zeros((0, *INPUT_SHAPE), np.float32)
