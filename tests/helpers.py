"""Test helpers shared by every test package: tiny models, ONNX export the project's way, checkpoints and image
folders. Tests and conftest files import them from here (a conftest is for fixtures only)."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.contract import INPUT_NAME, MAX_BATCH, OUTPUT_NAME
from trainer.checkpoint import model_metadata, save_checkpoint
from trainer.data import IMAGENET_MEAN, IMAGENET_STD
from trainer.model import AlexNet
from trainer.synthetic import CLASSES, draw_sample


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
    return AlexNet(num_classes)


MODEL_CASES = {
    "tiny-conv": ModelCase("tiny-conv", _seeded(TinyConvNet), (3, 16, 16), 5),
    "alexnet": ModelCase("alexnet", _seeded(_alexnet), (3, 227, 227), 10),  # 227×227 only; a couple of batches
}


def export_onnx(model: nn.Module, path: str | Path, input_shape: tuple[int, ...], *, dynamic_batch: bool = True,
                batch: int = 2, meta=None) -> Path:
    """Export like the project: dynamo, weights inside the file, input ``input`` / output ``logits``, IR <= 10."""
    import onnx

    from core.onnx_file import write_metadata

    path = Path(path)
    arg = next(iter(inspect.signature(model.forward).parameters))
    dynamic = {arg: {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}} if dynamic_batch else None
    x = torch.randn(batch, *input_shape)
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, external_data=False, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_shapes=dynamic, verbose=False)
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)  # ORT 1.31 rejects IR > 13; TensorRT 11 parses IR 10
    if meta is not None:
        write_metadata(proto, meta)
    onnx.save(proto, str(path))
    return path


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


def make_image_folder(root: Path, classes=("circle", "square", "star"), per_class: int = 5, size: int = 64,
                      seed: int = 0) -> Path:
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = name if name in CLASSES else CLASSES[label % len(CLASSES)]
            img = draw_sample(shape, size, np.random.default_rng([seed, label, i]))
            img.save(root / name / f"{i}.png")
    return root


def make_pooling_classifier(path: Path, class_names: list[str], logits: int | None = None, dynamic_hw: bool = False,
                            meta: dict | None = None, raw_props: dict[str, str] | None = None) -> Path:
    """A tiny ONNX "classifier" with AlexNet's I/O contract (input [N, 3, 227, 227], output [N, logits]): global
    average pool → Gemm, with alexnet-deploy metadata. Runs in microseconds, so the CLI's model checks can be tested
    without exporting AlexNet. ``logits`` other than the class count, ``dynamic_hw`` and ``raw_props`` (metadata
    entries written as given, e.g. not JSON) build the broken variants."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = logits or len(class_names)
    h = "h" if dynamic_hw else 227
    w = "w" if dynamic_hw else 227
    weight = numpy_helper.from_array(np.arange(3 * n, dtype=np.float32).reshape(3, n) / 10, "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])], "pooling",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    props = {"class_names": class_names, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
             "input_shape": [3, 227, 227], "precision": "fp32", "checkpoint_sha256": "", "checkpoint_path": "",
             **(meta or {})}
    for key, value in props.items():
        if value is not None:  # None in ``meta`` leaves the entry out (partial metadata)
            model.metadata_props.add(key=f"alexnet_deploy.{key}", value=json.dumps(value))
    for key, value in (raw_props or {}).items():
        model.metadata_props.add(key=f"alexnet_deploy.{key}", value=value)
    onnx.save(model, str(path))
    return path
