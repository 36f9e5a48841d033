"""Image-folder data sets (``DIR/<class>/<image>``), the train/val split, and the train/eval transform presets."""
from __future__ import annotations

import logging
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from core.contract import INPUT_SIZE
from trainer.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Sample = tuple[str, int]  # (path, class index)


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation; every part can be switched off on its own."""
    enabled: bool = True
    rotation_deg: float = 15.0                  # uniform in [-rotation_deg, +rotation_deg]
    zoom: tuple[float, float] = (0.8, 1.2)      # rescale factor range: < 1 zooms out, > 1 zooms in
    hflip: bool = True                          # horizontal flip with p = 0.5
    vflip: bool = True                          # vertical flip with p = 0.5 (the seed's augmentation set)


@dataclass(frozen=True)
class SplitData:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    bad_files: list[str]      # unreadable files that were skipped (empty unless skip_bad_images)
    source: str               # "train/val folders" or "stratified split"


def image_files(folder: str | os.PathLike) -> list[str]:
    """Every image file under ``folder`` (by extension), sorted; hidden files and folders are skipped, and only
    regular files count (a named pipe or a device called x.jpg would block or never end)."""
    folder = Path(folder)
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open any image as 3-channel RGB: grayscale, RGBA and palette images are converted."""
    with Image.open(path) as img:
        if img.mode == "P" and "transparency" in img.info:
            img = img.convert("RGBA")  # PIL warns when palette transparency is dropped implicitly
        return img.convert("RGB")


def find_split(data_dir: str | os.PathLike, val_split: float = 0.2, seed: int = 0, skip_bad_images: bool = False,
               min_train: int = 1, progress: Callable[[Sequence[str]], Sequence[str]] | None = None) -> SplitData:
    """Scan an image folder and return the training and validation samples.

    ``DIR/train`` + ``DIR/val`` are used as given when both exist; otherwise ``DIR/<class>/<image>`` is split per
    class with a seeded shuffle, so every class keeps its share of ``val_split`` in the validation set.

    Args:
        data_dir: The image folder.
        val_split: Fraction of each class held out for validation when there is no ``val`` folder.
        seed: Seed of the split.
        skip_bad_images: Skip unreadable files (reported in ``bad_files``) instead of failing.
        min_train: Fewest training images accepted (the batch size: a smaller set cannot fill one batch).
        progress: Optional wrapper around the list of files being checked (e.g. a progress bar).

    Raises:
        DataError: missing or empty folder, a single class, an empty class, unreadable files, too few images.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train = _scan_classes(root / "train")
        val_classes, val = _scan_classes(root / "val", classes)
        source = "train/val folders"
    else:
        if not 0.0 < val_split < 1.0:
            raise DataError(f"--val-split must be between 0 and 1 (exclusive), got {val_split}")
        classes, samples = _scan_classes(root)
        train, val = _stratified_split(samples, val_split, seed)
        source = f"stratified {val_split:.0%} split (seed {seed})"
    bad = _find_unreadable([p for p, _ in train + val], progress)
    if bad and not skip_bad_images:
        listed = "\n  ".join(bad[:20]) + (f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise DataError(f"{len(bad)} unreadable image file(s) in {root}:\n  {listed}\n"
                        "Remove them or pass --skip-bad-images to train without them.")
    if bad:
        bad_set = set(bad)
        train = [s for s in train if s[0] not in bad_set]
        val = [s for s in val if s[0] not in bad_set]
        log.warning("skipped %d unreadable image file(s)", len(bad))
    if len(train) < min_train:
        raise DataError(f"only {len(train)} training image(s) in {root}, fewer than the batch size {min_train}; "
                        "add images or lower --batch-size")
    if not val:
        raise DataError(f"no validation images in {root}: add images, raise --val-split, or provide a val/ folder")
    return SplitData(classes, train, val, bad, source)


def _scan_classes(folder: Path, expected: list[str] | None = None) -> tuple[list[str], list[Sample]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if expected is not None:
        unknown = sorted(set(classes) - set(expected))
        if unknown:
            raise DataError(f"{folder} has classes that the training folder lacks: {', '.join(unknown)}")
        classes = expected
    elif len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no class subfolders"
        raise DataError(f"{folder} must hold one subfolder per class (DIR/<class>/<image>) with at least 2 classes; "
                        f"found {found}")
    samples: list[Sample] = []
    empty = []
    for index, name in enumerate(classes):
        files = image_files(folder / name)
        if not files and expected is None:
            empty.append(name)
        samples.extend((f, index) for f in files)
    if empty:
        raise DataError(f"class folder(s) without images in {folder}: {', '.join(empty)} "
                        f"(accepted extensions: {' '.join(IMAGE_EXTENSIONS)})")
    return classes, samples


def _stratified_split(samples: list[Sample], val_split: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    rng = np.random.default_rng(seed)
    train, val = [], []
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    for label in sorted(by_class):
        items = by_class[label]
        order = rng.permutation(len(items))
        n_val = int(round(len(items) * val_split)) if len(items) > 1 else 0
        n_val = min(max(n_val, 1 if len(items) > 1 else 0), len(items) - 1)
        val.extend(items[i] for i in order[:n_val])
        train.extend(items[i] for i in order[n_val:])
    return train, val


def _find_unreadable(paths: list[str], progress: Callable | None) -> list[str]:
    bad = []
    for path in (progress(paths) if progress else paths):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as img:
                    img.draft("RGB", (64, 64))  # JPEG: decode at 1/8 scale; still reads every byte of the stream
                    img.load()
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            bad.append(path)
    return bad


def class_counts(samples: list[Sample], classes: list[str]) -> dict[str, int]:
    counts = Counter(label for _, label in samples)
    return {name: counts.get(i, 0) for i, name in enumerate(classes)}


def train_transform(augment: AugmentConfig) -> v2.Compose:
    """Resize the shorter side to 227, random-crop 227, then rotation / zoom / flips; uint8 CHW out.

    Normalisation is left to :func:`normalize_batch` in the training process: one vectorised op per batch there is
    cheaper than per image in a worker, and uint8 batches cross the process boundary 4× smaller.
    """
    if not augment.enabled:
        return eval_transform_uint8()
    ops: list = [v2.Resize(INPUT_SIZE, antialias=True), v2.RandomCrop(INPUT_SIZE)]
    if augment.rotation_deg or augment.zoom != (1.0, 1.0):
        # One affine warp applies rotation and rescaling together: a single interpolation, half the work.
        ops.append(v2.RandomAffine(degrees=augment.rotation_deg, scale=augment.zoom))
    if augment.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if augment.vflip:
        ops.append(v2.RandomVerticalFlip())
    return v2.Compose(ops + [v2.PILToTensor()])


def eval_transform_uint8() -> v2.Compose:
    """Deterministic: resize the shorter side to 227, center-crop 227×227; uint8 CHW out."""
    return v2.Compose([v2.Resize(INPUT_SIZE, antialias=True), v2.CenterCrop(INPUT_SIZE), v2.PILToTensor()])


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """The validation preprocessing, normalised float32 out: what export, bench and predict feed a model."""
    return v2.Compose([eval_transform_uint8(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(mean), list(std))])


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's randomness (order, augmentation, dropout): resumed runs must derive it identically."""
    return seed * 1_000_003 + epoch


def normalize_batch(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``N×3×H×W`` → float32 ``(x / 255 - mean) / std``, keeping the tensor's device and memory format."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.float().div_(255.0).sub_(mean_t).div_(std_t)


class ImageListDataset(Dataset):
    """(path, label) samples, loaded as RGB and transformed on access.

    Indexed by ``(epoch, index)`` (see :class:`EpochSampler`), the transform's randomness is seeded from
    ``(seed, epoch, index)``: an image gets the same augmentation in epoch N whichever worker loads it and whether or
    not the run was resumed. A plain int index uses the global RNG as usual.
    """

    def __init__(self, samples: list[Sample], transform: Callable, seed: int = 0) -> None:
        self.samples = samples
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            epoch, index = key
            path, label = self.samples[index]
            image = load_rgb(path)
            with torch.random.fork_rng(devices=[]):  # leave the caller's RNG (dropout masks) untouched
                torch.manual_seed(epoch_seed(self.seed, epoch) * 10_000_019 + index)
                return self.transform(image), label
        path, label = self.samples[key]
        return self.transform(load_rgb(path)), label


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``: a seeded per-epoch shuffle (or the plain order), optionally one rank's share.

    The order is drawn in the training process, so persistent workers need no epoch of their own; the epoch travels
    with every index to seed that sample's augmentation. With ``num_replicas > 1`` each rank takes every
    ``num_replicas``-th index of the same shuffle, padded by wrapping so every rank gets as many (DistributedSampler's
    rule).
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 pad: bool = True) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.num_replicas, self.rank, self.pad = num_replicas, rank, pad
        self.epoch = 0
        # Training pads so every rank runs the same number of steps; evaluation does not, so no image counts twice.
        self.per_rank = -(-size // num_replicas) if pad else len(range(rank, size, num_replicas))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad:
            total = self.per_rank * self.num_replicas
            order = (order * (-(-total // max(len(order), 1))))[:total]
        return iter([(self.epoch, i) for i in order[self.rank::self.num_replicas]])
