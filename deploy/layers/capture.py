"""Each layer's output on one runtime: PyTorch through forward hooks, the ONNX runtimes through a copy of the file
whose graph also outputs every layer's tensor, run through the runtime's own adapter."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from core.errors import ToolkitError
from core.onnx_file import OnnxInfo, read_onnx_info
from deploy.inputs import infer_in_chunks
from deploy.models import TorchModel, make_runtime
from export.layers import LAYERS, TORCH_OUTPUT, LayerMap, map_layers, with_layer_outputs
from runtimes.options import RuntimeOptions
from runtimes.registry import runs_onnx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activations:
    """Every layer's output on ``images``, as the runtime returned it (fp16 stays fp16), and what was read."""
    runtime: str
    precision: str
    values: dict[str, np.ndarray]    # layer → [images, ...]
    tensors: dict[str, str]          # layer → the graph tensor read ("" for torch: the module output)
    logits: np.ndarray               # the file's own output, from the same run


@dataclass(frozen=True)
class Graph:
    """An ONNX file's I/O and its layer map (its weights are read again only when a probed copy is written)."""
    info: OnnxInfo
    layer_map: LayerMap


def load_graph(onnx_path: str | os.PathLike) -> Graph:
    """The file's I/O and layer map.

    Raises:
        OnnxFileError: an unreadable file. LayerMapError: not an exported AlexNet.
    """
    import onnx

    info = read_onnx_info(onnx_path)  # a missing or corrupt file fails here, with the toolkit's message
    return Graph(info, map_layers(onnx.load(os.fspath(onnx_path), load_external_data=False)))


@contextlib.contextmanager
def probed_file(graph: Graph) -> Iterator[Path]:
    """A temporary copy of the file with every layer's output tensor marked as a graph output."""
    import onnx

    model = onnx.load(os.fspath(graph.info.path))
    with tempfile.TemporaryDirectory(prefix="alexnet-layers-") as tmp:
        path = Path(tmp) / "probed.onnx"
        onnx.save(with_layer_outputs(model, graph.layer_map), os.fspath(path))
        del model
        yield path


def runtime_activations(name: str, probed: Path, info: OnnxInfo, layer_map: LayerMap, torch_model: TorchModel | None,
                        options: RuntimeOptions, images: np.ndarray, chunk: int) -> Activations:
    """Layer outputs of runtime ``name``: the probed copy through its adapter, or (torch) hooks on the model.

    Raises:
        ToolkitError: the runtime failed to load or run, or returned no tensor for a layer.
    """
    if not runs_onnx(name):
        return torch_activations(torch_model, info, options, images, chunk, name)
    if name == "tensorrt":  # an engine of its own, in a throwaway cache: the probed file is not the deployed one
        options = dataclasses.replace(options, engine_cache=str(probed.parent / "engines"))
    with make_runtime(name, probed, info, torch_model, options, (chunk,)) as rt:
        outputs = infer_in_chunks(rt, images, chunk)
        precision = rt.precision
    missing = [layer for layer in LAYERS if layer_map.outputs[layer] not in outputs]
    if missing:
        raise ToolkitError(f"{name} returned no tensor for {', '.join(missing)} (asked for "
                           f"{', '.join(layer_map.outputs[m] for m in missing)})")
    values = {layer: outputs[layer_map.outputs[layer]] for layer in LAYERS}
    return Activations(name, precision, values, dict(layer_map.outputs), outputs[info.outputs[0].name])


def torch_activations(torch_model: TorchModel | None, info: OnnxInfo, options: RuntimeOptions, images: np.ndarray,
                      chunk: int, name: str = "torch") -> Activations:
    """Layer outputs of the PyTorch model (``options.precision`` None = fp32, eager, TF32 off; bf16 = torch bf16),
    read by forward hooks on trainer/model.py's modules while the torch runtime runs it.

    Raises:
        ToolkitError: no checkpoint, or a model without AlexNet's modules.
    """
    if torch_model is None:
        raise ToolkitError("layer parity needs the PyTorch checkpoint: the ONNX metadata names none that exists "
                           "(pass --reference RUN)")
    model = own_model(torch_model)
    modules = dict(model.named_modules())
    absent = [TORCH_OUTPUT[layer] for layer in LAYERS if TORCH_OUTPUT[layer] not in modules]
    if absent:
        raise ToolkitError(f"the PyTorch model has no module {', '.join(absent)}: not trainer/model.py's AlexNet")
    captured: dict[str, list[np.ndarray]] = {layer: [] for layer in LAYERS}

    def hook(layer: str):
        def keep(module, args, output):  # the ReLUs work in place: copy now, before the next layer reads it
            captured[layer].append(output.detach().float().cpu().numpy().copy())
        return keep

    handles = [modules[TORCH_OUTPUT[layer]].register_forward_hook(hook(layer)) for layer in LAYERS]
    plain = dataclasses.replace(options, compile=False)  # hooks see eager modules; torch.compile would fuse them
    try:
        given = TorchModel(None, torch_model.origin, lambda: model)
        with make_runtime(name, info.path, info, given, plain) as rt:
            logits = infer_in_chunks(rt, images, chunk)[info.outputs[0].name]
            precision = rt.precision
    finally:
        for handle in handles:
            handle.remove()
    values = {layer: np.concatenate(parts) for layer, parts in captured.items()}
    return Activations(name, precision, values, {layer: "" for layer in LAYERS}, logits)


def own_model(torch_model: TorchModel):
    """A model of our own to hook: a checkpoint builds a new one; a model given in code is copied, since the torch
    runtime moves and casts it in place (bf16) and the hooks must not stay on the caller's."""
    import copy

    model = torch_model.build()
    return copy.deepcopy(model) if torch_model.path is None else model


def reference_activations(torch_model: TorchModel | None, info: OnnxInfo, options: RuntimeOptions,
                          images: np.ndarray, chunk: int) -> Activations:
    """PyTorch fp32 (eager, TF32 off): what every layer is compared with."""
    plain = dataclasses.replace(options, precision=None, compile=False, allow_tf32=False)
    return torch_activations(torch_model, info, plain, images, chunk)


def file_logits(name: str, info: OnnxInfo, torch_model: TorchModel | None, options: RuntimeOptions,
                images: np.ndarray, chunk: int) -> np.ndarray:
    """The unmodified file's logits on runtime ``name``: what the probed copy's logits are checked against."""
    with make_runtime(name, info.path, info, torch_model, options, (chunk,)) as rt:
        return infer_in_chunks(rt, images, chunk)[info.outputs[0].name]
