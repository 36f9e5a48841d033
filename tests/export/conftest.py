"""Export test fixtures: a tiny image folder, random-weight checkpoints, and exported files shared per session."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

from trainer.checkpoint import model_metadata, save_checkpoint
from trainer.data import IMAGENET_MEAN, IMAGENET_STD
from trainer.model import AlexNet
from trainer.synthetic import CLASSES, SyntheticSpec, ensure_synthetic_dataset


def make_checkpoint(run_dir: Path, data: Path | None = None, num_classes: int = len(CLASSES), seed: int = 0,
                    meta_classes: int | None = None) -> Path:
    """A random-weight checkpoint in ``run_dir``. Biases are non-zero (a dropped bias must show) and fc8 is
    He-initialised so the logits have a trained model's O(1-10) scale rather than the init's O(0.01).
    ``meta_classes`` writes metadata for a different class count than the weights have."""
    torch.manual_seed(seed)
    model = AlexNet(num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.bias.uniform_(-0.05, 0.05)
        nn.init.kaiming_normal_(model.classifier.fc8.weight, nonlinearity="relu")
    n = meta_classes or num_classes
    names = list(CLASSES) if n == len(CLASSES) else [f"class{i}" for i in range(n)]
    extra = {"data": {"path": str(data), "val_split": 0.2, "seed": 0}} if data is not None else {}
    save_checkpoint(run_dir, model.state_dict(), model_metadata(n, names, IMAGENET_MEAN, IMAGENET_STD, 0.5, **extra))
    return run_dir


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """6 classes x 4 images of 64 px: 18 training and 6 validation images."""
    return ensure_synthetic_dataset(root=tmp_path_factory.mktemp("data"),
                                    spec=SyntheticSpec(images_per_class=4, image_size=64))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, image_folder) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run"), data=image_folder)


@pytest.fixture(scope="session")
def confident_checkpoint(tmp_path_factory, image_folder) -> Path:
    """A checkpoint fitted to every image of ``image_folder``, so its validation predictions have a trained model's
    margins. A random-weight model's top-1/top-2 gaps are smaller than int8 rounding noise (and scaling fc8 scales
    both), so int8 agreement on it measures luck, not the export."""
    from trainer.checkpoint import load_checkpoint
    from trainer.data import ImageListDataset, eval_transform, find_split

    run = make_checkpoint(tmp_path_factory.mktemp("confident"), data=image_folder)
    ckpt = load_checkpoint(run)
    split = find_split(image_folder)
    dataset = ImageListDataset(split.train + split.val, eval_transform(IMAGENET_MEAN, IMAGENET_STD))
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([label for _, label in dataset.samples])
    model = ckpt.build_model()
    model.classifier.drop6.p = model.classifier.drop7.p = 0.0  # fit quickly; dropout is gone at export anyway
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    save_checkpoint(run, model.state_dict(), ckpt.meta)
    return run


@pytest.fixture(scope="session")
def exported(tmp_path_factory, checkpoint) -> Callable:
    """``exported(precision, **spec_fields)`` → ExportResult, each combination exported once per session."""
    from export.exporter import export_onnx
    from export.spec import ExportSpec

    cache: dict = {}
    folder = tmp_path_factory.mktemp("onnx")

    def get(precision: str = "fp32", **fields):
        key = (precision, tuple(sorted(fields.items())))
        if key not in cache:
            name = "-".join([precision] + [f"{k}{v}" for k, v in sorted(fields.items())]) + ".onnx"
            cache[key] = export_onnx(checkpoint, folder / name, ExportSpec(precision=precision, **fields))
        return cache[key]

    return get
