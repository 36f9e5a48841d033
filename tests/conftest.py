"""Shared fixtures (built from tests/helpers.py): the tiny-model registry, the project's ONNX export, a tiny conv
net's ONNX file, a small AlexNet "run", the two image folders, and checkpoints and exports on the shapes data."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch

from tests.helpers import MODEL_CASES, ModelCase, _alexnet, export_onnx, make_checkpoint, make_image_folder
from trainer.checkpoint import save_checkpoint
from trainer.data import IMAGENET_MEAN, IMAGENET_STD


def _require_exporter() -> None:
    """The dynamo exporter needs onnx and onnxscript: skip (with the reason) where they are not installed."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A fresh, writable folder of 3 classes × 5 small PNGs (tests may break it)."""
    return make_image_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """The built-in shapes data in miniature, shared read-only: 6 classes x 4 images of 64 px (18 training and 6
    validation images)."""
    from trainer.synthetic import SyntheticSpec, ensure_synthetic_dataset

    return ensure_synthetic_dataset(root=tmp_path_factory.mktemp("data"),
                                    spec=SyntheticSpec(images_per_class=4, image_size=64))


@pytest.fixture(scope="session")
def model_cases() -> dict[str, ModelCase]:
    return MODEL_CASES


@pytest.fixture(scope="session")
def onnx_exporter() -> Callable[..., Path]:
    return export_onnx


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> SimpleNamespace:
    """The tiny conv net and its dynamic-batch ONNX file (no metadata)."""
    _require_exporter()
    case = MODEL_CASES["tiny-conv"]
    model = case.build()
    path = export_onnx(model, tmp_path_factory.mktemp("tiny") / "tiny.onnx", case.input_shape)
    return SimpleNamespace(path=path, model=model, case=case)


@pytest.fixture(scope="session")
def alexnet_run(tmp_path_factory) -> SimpleNamespace:
    """A random-init 2-class AlexNet saved as a run folder, 8 JPEGs per class, and ``model.onnx`` whose metadata
    names the checkpoint and the data (so bench finds the PyTorch reference and real images by itself)."""
    _require_exporter()
    from PIL import Image

    from core.onnx_file import OnnxMeta
    from trainer.checkpoint import model_metadata, save_checkpoint
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD
    from core.fileio import sha256_file

    root = tmp_path_factory.mktemp("alexnet-run")
    classes = ["dark", "light"]
    rng = np.random.default_rng(0)
    for index, name in enumerate(classes):
        (root / "data" / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 128, (64, 80, 3), dtype=np.uint8) + 100 * index
            Image.fromarray(pixels.astype(np.uint8)).save(root / "data" / name / f"{i}.jpg", quality=90)
    torch.manual_seed(0)
    model = _alexnet(len(classes)).eval()
    weights = save_checkpoint(root / "run", model.state_dict(),
                              model_metadata(len(classes), classes, IMAGENET_MEAN, IMAGENET_STD, 0.5))
    meta = OnnxMeta(class_names=classes, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), input_shape=[3, 227, 227],
                    precision="fp32", checkpoint_sha256=sha256_file(weights), checkpoint_path=str(weights),
                    data_path=str(root / "data"), val_split=0.5, seed=0)
    onnx_path = export_onnx(model, root / "model.onnx", (3, 227, 227), meta=meta)
    return SimpleNamespace(root=root, run_dir=root / "run", weights=weights, onnx_path=onnx_path, model=model,
                           classes=classes, data_dir=root / "data")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory, shapes_data) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("run"), data=shapes_data)


@pytest.fixture(scope="session")
def confident_checkpoint(tmp_path_factory, shapes_data) -> Path:
    """A checkpoint fitted to every image of ``shapes_data``, so its validation predictions have a trained model's
    margins. A random-weight model's top-1/top-2 gaps are smaller than int8 rounding noise (and scaling fc8 scales
    both), so int8 agreement on it measures luck, not the export."""
    from trainer.checkpoint import load_checkpoint
    from trainer.data import ImageListDataset, eval_transform, find_split

    run = make_checkpoint(tmp_path_factory.mktemp("confident"), data=shapes_data)
    ckpt = load_checkpoint(run)
    split = find_split(shapes_data)
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


# Fixtures that export or fit a full AlexNet (5-25 s each on 2 cores): every test that uses one is slow, so
# `pytest -m "not slow"` stays the quick subset without a mark to forget.
_SLOW_FIXTURES = {"alexnet_run", "exported", "confident_checkpoint"}


def pytest_collection_modifyitems(items):
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
