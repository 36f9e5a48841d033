"""Shared fixtures: a registry of tiny models (each with a check), ONNX export helpers and a small AlexNet "run".

Any test package can use them: ``model_cases`` (the registry), ``onnx_exporter`` (export a module to ONNX the way the
project does: dynamo, one file, IR 10, dynamic batch), ``tiny_onnx`` (a tiny conv net, exported once per session) and
``alexnet_run`` (a random-init AlexNet checkpoint + a few images + its ONNX export with alexnet_deploy metadata).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn


class TinyConvNet(nn.Module):
    """Conv → ReLU → pool → Linear on 3×16×16 inputs: exports and runs in milliseconds."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


@dataclass(frozen=True)
class ModelCase:
    """One registry entry: how to build the model and what a correct output looks like."""
    name: str
    build: Callable[[], nn.Module]   # deterministic (seeded), eval mode
    input_shape: tuple[int, ...]     # one sample, without the batch dimension
    num_classes: int

    def sample(self, batch: int, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).standard_normal((batch, *self.input_shape), dtype=np.float32)

    def check(self, logits: np.ndarray, batch: int) -> None:
        assert logits.shape == (batch, self.num_classes), f"{self.name}: logits shape {logits.shape}"
        assert logits.dtype == np.float32 and np.all(np.isfinite(logits)), f"{self.name}: bad logits"


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return factory().eval()
    return build


def _alexnet(num_classes: int = 10) -> nn.Module:
    from trainer.model import AlexNet

    return AlexNet(num_classes)


MODEL_CASES = {
    "tiny-conv": ModelCase("tiny-conv", _seeded(TinyConvNet), (3, 16, 16), 5),
    "alexnet": ModelCase("alexnet", _seeded(_alexnet), (3, 227, 227), 10),  # 227×227 only; a couple of batches
}


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *, dynamic_batch: bool = True,
                batch: int = 2, meta=None) -> Path:
    """Export like the project: dynamo, weights inside the file, input ``input`` / output ``logits``, IR <= 10."""
    import onnx

    from export.metadata import write_metadata

    path = Path(path)
    arg = next(iter(inspect.signature(model.forward).parameters))
    dynamic = {arg: {0: torch.export.Dim("batch", min=1, max=256)}} if dynamic_batch else None
    x = torch.randn(batch, *input_shape)
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, external_data=False, input_names=["input"],
                      output_names=["logits"], dynamic_shapes=dynamic, verbose=False)
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)  # ORT 1.31 rejects IR > 13; TensorRT 11 parses IR 10
    if meta is not None:
        write_metadata(proto, meta)
    onnx.save(proto, str(path))
    return path


def _require_exporter() -> None:
    """The dynamo exporter needs onnx and onnxscript: skip (with the reason) where they are not installed."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")


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

    from export.metadata import OnnxMeta
    from trainer.checkpoint import model_metadata, save_checkpoint
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD
    from trainer.fileio import sha256_file

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
