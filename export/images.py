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

from export.errors import ExportError
from trainer.data import IMAGE_EXTENSIONS, eval_transform, find_split, load_rgb
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


def validation_images(meta: dict[str, Any], class_names: Sequence[str], limit: int) -> ImageSet | None:
    """Up to ``limit`` images of the checkpoint's validation split, spread evenly over it (so over the classes).

    Returns None, with a logged note, when the checkpoint names no data folder, the folder is gone or unreadable, or its
    classes differ from the checkpoint's (labels would be wrong).
    """
    split = _split(meta) if limit > 0 else None
    if split is None:
        return None
    if list(split.classes) != list(class_names):
        log.warning("skipping real-image parity: the classes in %s (%s) differ from the checkpoint's",
                    meta["data"]["path"], ", ".join(split.classes))
        return None
    samples = _spread(split.val, limit)
    tensors = _load([path for path, _ in samples], meta)
    return ImageSet(tensors, np.array([label for _, label in samples]), f"{len(samples)} validation images from "
                    f"{meta['data']['path']}")


def calibration_images(meta: dict[str, Any], directory: str | os.PathLike | None, count: int) -> ImageSet:
    """``count`` calibration images: from ``directory`` (any images below it), else the checkpoint's training images,
    else the built-in shapes data.

    Raises:
        ExportError: ``directory`` holds no readable image.
    """
    if directory is not None:
        directory = Path(directory)
        paths = _image_files(directory)
        if not paths:
            raise ExportError(f"no calibration images in {directory} (looked for {' '.join(IMAGE_EXTENSIONS)} "
                              "files in it and its subfolders)")
        source = str(directory)
    else:
        split = _split(meta)
        if split is not None:
            paths, source = [p for p, _ in split.train], f"the training images in {meta['data']['path']}"
        else:
            from trainer.synthetic import ensure_synthetic_dataset

            folder = ensure_synthetic_dataset()
            paths, source = _image_files(folder), f"the built-in shapes data ({folder})"
    chosen = _spread(paths, count)
    tensors = _load(chosen, meta, skip_bad=True)
    if len(tensors) == 0:
        raise ExportError(f"none of the {len(chosen)} calibration images from {source} could be read")
    log.info("calibrating int8 on %d images from %s", len(tensors), source)
    return ImageSet(tensors, None, f"{len(tensors)} images from {source}")


def _split(meta: dict[str, Any]):
    data = meta.get("data") or {}
    path = data.get("path")
    if not path:
        log.info("the checkpoint records no data folder: real-image checks skipped")
        return None
    if not Path(path).is_dir():
        log.warning("the training data folder %s is gone: real-image checks skipped", path)
        return None
    try:
        return _find_split(path, float(data.get("val_split", 0.2)), int(data.get("seed", 0)))
    except DataError as e:
        log.warning("cannot use the training data in %s (%s): real-image checks skipped", path, e)
        return None


@functools.lru_cache(maxsize=4)
def _find_split(path: str, val_split: float, seed: int):
    """find_split opens every image once; validation and calibration share the result within a process."""
    return find_split(path, val_split, seed, skip_bad_images=True)


def _image_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _spread(items: Sequence, count: int) -> list:
    """``count`` items evenly spaced over ``items`` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    index = np.unique(np.linspace(0, len(items) - 1, count).round().astype(int))
    return [items[i] for i in index]


def _load(paths: Sequence[str], meta: dict[str, Any], skip_bad: bool = False) -> np.ndarray:
    transform = eval_transform(meta["mean"], meta["std"])
    tensors = []
    for path in paths:
        try:
            tensors.append(transform(load_rgb(path)).numpy())
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
            if not skip_bad:
                raise ExportError(f"cannot read the image {path}: {e}") from None
            log.warning("skipping unreadable image %s", path)
    return np.stack(tensors).astype(np.float32) if tensors else np.zeros((0, 3, 227, 227), np.float32)
