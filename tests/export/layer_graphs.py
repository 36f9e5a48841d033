"""A small AlexNet and the exporter's graphs of it in every precision and LRN form, for the layer-map and layer-parity
tests: trainer/model.py's AlexNet with narrow fc6/fc7 (64 units) has the full model's graph, nodes and names with a
fifteenth of its weights, so each export step and runtime session takes a fraction of a second."""
from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import onnx
import torch

CLASSES = ["a", "b", "c", "d"]


def small_alexnet(seed: int = 0) -> torch.nn.Module:
    from trainer.model import AlexNet

    torch.manual_seed(seed)
    model = AlexNet(len(CLASSES))
    model.classifier.fc6 = torch.nn.Linear(256 * 6 * 6, 64)
    model.classifier.fc7 = torch.nn.Linear(64, 64)
    model.classifier.fc8 = torch.nn.Linear(64, len(CLASSES))
    with torch.no_grad():
        for module in model.modules():  # biases that matter, as a trained model's do
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.bias.uniform_(-0.05, 0.05)
    return model.eval()


class Forms(dict):
    """``forms["int8-native"]``: the exporter's graph (dynamo export with the LRN custom op) lowered to an LRN form and
    cast to fp16 or quantised to int8 (calibrated on fixed-seed noise), built on first use: the exporter's steps
    before its parity check."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        from export.exporter import _torch_export
        from export.spec import ExportSpec

        self.model = model
        self.exported = _torch_export(model, ExportSpec())

    def __missing__(self, form: str) -> onnx.ModelProto:
        from export import lrn as lrn_forms
        from export.precision import convert_to_fp16, quantize_int8

        precision, lrn = form.split("-")
        graph = lrn_forms.lower_lrn(copy.deepcopy(self.exported), lrn)
        if precision == "fp16":
            graph = convert_to_fp16(graph, keep_fp32=lrn_forms.is_lrn_node)
        elif precision == "int8":
            keep = lrn_forms.prepare_lrn_for_int8(graph)
            calib = [np.random.default_rng(0).standard_normal((4, 3, 227, 227), dtype=np.float32)]
            graph = quantize_int8(graph, calib, input_name="input", exclude=keep)
        self[form] = graph
        return graph

    def save(self, form: str, path: Path) -> Path:
        """The form as a file with the exporter's metadata (precision and LRN form; no checkpoint)."""
        from core.onnx_file import OnnxMeta, write_metadata
        from trainer.data import IMAGENET_MEAN, IMAGENET_STD

        graph = copy.deepcopy(self[form])
        precision, lrn = form.split("-")
        write_metadata(graph, OnnxMeta(class_names=CLASSES, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                                       input_shape=[3, 227, 227], precision=precision, checkpoint_sha256="",
                                       checkpoint_path="", lrn=lrn))
        onnx.save(graph, str(path))
        return path


@functools.cache
def shared_forms() -> Forms:
    """One small AlexNet and its forms per test session (export/ and deploy/layers tests share the export)."""
    return Forms(small_alexnet())
