"""Tiny image folders for trainer tests (a few 64-px images per class: fast to write, decode and train on)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainer.synthetic import CLASSES, draw_sample


def make_image_folder(root: Path, classes=("circle", "square", "star"), per_class: int = 5, size: int = 64,
                      seed: int = 0) -> Path:
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = name if name in CLASSES else CLASSES[label % len(CLASSES)]
            img = draw_sample(shape, size, np.random.default_rng([seed, label, i]))
            img.save(root / name / f"{i}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "data")
