"""The one node → layer table: which nodes and tensors of an exported AlexNet graph belong to which of its layers.

Every exported form maps to the same 13 layers, named as in ``trainer/model.py`` (the paper's conv1…fc8 plus its
response-normalisation and max-pool layers): fp32, fp16 (its Casts around the fp32 LRN island), int8 (the Q/DQ
pairs and the weight DequantizeLinears), and both LRN forms (one ``LRN`` node, or the banded conv's ``lrn<i>.*``
nodes). A conv or fc layer is found by its weight initializer (``features.conv3.weight`` and its ``.fp16`` /
``_quantized`` copies), an LRN by its ``lrn<i>`` node names (export/lrn.py), a pool by the order of the MaxPools.
Every other node belongs to the layer whose data it takes (a ReLU, a Cast, the Q/DQ of an output, the flatten), and
nodes that only prepare weights or the graph input belong to the layer that consumes them.

A layer's output is the tensor that crosses to the next layer: the value the next layer really reads (after the
ReLU; in int8 after its Q/DQ pair, so the quantisation of an output counts in that layer's error).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import onnx
from onnx import TensorProto, helper

from core.errors import ToolkitError
from export.lrn import is_lrn_node

# AlexNet's layers in execution order. A conv or fc layer includes its ReLU (the ReLU is fused into it by every
# runtime, and the next layer reads its output); LRN layers are trainer/model.py's lrn1/lrn2 (Caffe's norm1/norm2).
LAYERS: tuple[str, ...] = ("conv1", "lrn1", "pool1", "conv2", "lrn2", "pool2", "conv3", "conv4", "conv5", "pool5",
                           "fc6", "fc7", "fc8")
# The trainer module whose forward output is the layer's output (trainer/model.py), for PyTorch forward hooks, and
# the first module of the layer (a span over first..last is the layer's time in torch.profiler).
TORCH_OUTPUT: dict[str, str] = {
    "conv1": "features.relu1", "lrn1": "features.lrn1", "pool1": "features.pool1", "conv2": "features.relu2",
    "lrn2": "features.lrn2", "pool2": "features.pool2", "conv3": "features.relu3", "conv4": "features.relu4",
    "conv5": "features.relu5", "pool5": "features.pool5", "fc6": "classifier.relu6", "fc7": "classifier.relu7",
    "fc8": "classifier.fc8"}
TORCH_FIRST: dict[str, str] = {
    **{name: f"features.{name}" for name in LAYERS if name.startswith(("conv", "lrn", "pool"))},
    "fc6": "classifier.drop6", "fc7": "classifier.drop7", "fc8": "classifier.fc8"}
POOLS = tuple(name for name in LAYERS if name.startswith("pool"))
_WEIGHT = re.compile(r"^(?:features|classifier)\.((?:conv|fc)\d+)\.weight")
_WEIGHT_OPS = ("Conv", "Gemm", "MatMul")
_VALUE_PRESERVING = ("Cast", "DequantizeLinear", "Reshape", "Flatten", "Identity")  # same values, other type/shape


class LayerMapError(ToolkitError):
    """The graph is not an exported AlexNet: a layer cannot be found, or its output is not one tensor."""


@dataclass(frozen=True)
class LayerMap:
    """Where each AlexNet layer is in one ONNX graph.

    ``nodes[layer]``: the graph's node names that belong to it; ``outputs[layer]``: the tensor that is its output;
    ``aliases[layer]``: earlier tensors of the same layer that hold the same values before a Cast, a Q/DQ pair or the
    flatten (what a runtime that renames the output tensor can still read), nearest first.
    """
    nodes: dict[str, tuple[str, ...]]
    outputs: dict[str, str]
    aliases: dict[str, tuple[str, ...]]
    tensors: dict[str, str]          # every tensor → the layer whose node produces it (the graph input: the first)

    def layer_of(self, name: str) -> str | None:
        """The layer of a node name or a tensor name of this graph, else None."""
        return self._node_layer().get(name) or self.tensors.get(name)

    def _node_layer(self) -> dict[str, str]:
        return {node: layer for layer, names in self.nodes.items() for node in names}

    def to_dict(self) -> dict:
        return {layer: {"output": self.outputs[layer], "aliases": list(self.aliases[layer]),
                        "nodes": list(self.nodes[layer])} for layer in LAYERS}


def map_layers(model: onnx.ModelProto) -> LayerMap:
    """The layer of every node and tensor of an exported AlexNet graph, and each layer's output tensor.

    Raises:
        LayerMapError: a layer is missing (not an AlexNet export), or its output is not exactly one tensor.
    """
    graph = model.graph
    nodes = list(graph.node)
    weights = {i.name for i in graph.initializer} | {c.output[0] for c in nodes if c.op_type == "Constant"}
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    data = _data_inputs(nodes, weights)
    layer: list[str | None] = [_anchor(node, producer, nodes) for node in nodes]
    pools = [i for i, node in enumerate(nodes) if node.op_type == "MaxPool"]
    if len(pools) != len(POOLS):
        raise LayerMapError(f"not an AlexNet graph: {len(pools)} MaxPool nodes, expected {len(POOLS)}")
    for i, name in zip(pools, POOLS):
        layer[i] = name
    order = {name: k for k, name in enumerate(LAYERS)}
    for i in range(len(nodes)):  # topological order: a node joins the latest layer it reads data from
        if layer[i] is None:
            sources = [layer[producer[t]] for t in data[i] if t in producer and layer[producer[t]]]
            layer[i] = max(sources, key=order.__getitem__) if sources else None
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    for i in reversed(range(len(nodes))):  # weight preparation and input Q/Cast: the layer that consumes them
        if layer[i] is None:
            users = [layer[j] for t in nodes[i].output for j in consumers.get(t, []) if layer[j]]
            layer[i] = min(users, key=order.__getitem__) if users else None
    missing = [name for name in LAYERS if name not in layer]
    if missing or None in layer:
        stray = [nodes[i].name or nodes[i].op_type for i, lay in enumerate(layer) if lay is None]
        raise LayerMapError(f"not an AlexNet graph: no {', '.join(missing)} found" if missing else
                            f"nodes that belong to no layer: {', '.join(stray[:5])}")
    return _build(graph, nodes, layer, consumers, producer)


def _data_inputs(nodes: list, weights: set[str]) -> list[list[str]]:
    """Per node, the inputs that carry activations (not weights, nor tensors computed from weights only)."""
    weight_like = set(weights)
    for node in nodes:
        if all(not t or t in weight_like for t in node.input):
            weight_like.update(node.output)
    return [[t for t in node.input if t and t not in weight_like] for node in nodes]


def _anchor(node: onnx.NodeProto, producer: dict[str, int], nodes: list) -> str | None:
    """The layer a node names by itself: its weight initializer (conv/fc) or its lrn<i> name."""
    if is_lrn_node(node):
        head = node.name.split(".", 1)[0]
        return head if head in LAYERS else None
    if node.op_type in _WEIGHT_OPS and len(node.input) > 1:
        match = _WEIGHT.match(_weight_source(node.input[1], producer, nodes))
        return match.group(1) if match and match.group(1) in LAYERS else None
    return None


def _weight_source(tensor: str, producer: dict[str, int], nodes: list) -> str:
    """The initializer a weight input comes from, through DequantizeLinear / Cast / Transpose."""
    seen = 0
    while tensor in producer and seen < 8:
        node = nodes[producer[tensor]]
        if node.op_type not in ("DequantizeLinear", "Cast", "Transpose", "Identity"):
            break
        tensor, seen = node.input[0], seen + 1
    return tensor


def _build(graph, nodes: list, layer: list[str], consumers: dict[str, list[int]],
           producer: dict[str, int]) -> LayerMap:
    order = {name: k for k, name in enumerate(LAYERS)}
    tensors = {i.name: LAYERS[0] for i in graph.input}
    for i, node in enumerate(nodes):
        tensors.update({t: layer[i] for t in node.output})
    graph_outputs = [o.name for o in graph.output]
    outputs, aliases = {}, {}
    for name in LAYERS:
        if name == LAYERS[-1]:
            crossing = [t for t in graph_outputs if tensors.get(t) == name]
        else:
            crossing = sorted({t for t, lay in tensors.items() if lay == name and any(
                order[layer[j]] > order[name] for j in consumers.get(t, []))})
        if len(crossing) != 1:
            raise LayerMapError(f"layer {name}: expected one output tensor, found {len(crossing)} "
                                f"({', '.join(crossing) or 'none'})")
        outputs[name] = crossing[0]
        aliases[name] = _aliases(crossing[0], name, nodes, layer, producer)
    names = {name: tuple(n.name for n, lay in zip(nodes, layer) if lay == name) for name in LAYERS}
    return LayerMap(names, outputs, aliases, tensors)


def _aliases(tensor: str, name: str, nodes: list, layer: list[str], producer: dict[str, int]) -> tuple[str, ...]:
    """Tensors before ``tensor`` that hold its values: back through Cast, DQ(Q(x)), Reshape of the same layer."""
    found = []
    while tensor in producer and layer[producer[tensor]] == name:
        node = nodes[producer[tensor]]
        if node.op_type not in _VALUE_PRESERVING:
            break
        tensor = node.input[0]
        if node.op_type == "DequantizeLinear" and tensor in producer and \
                nodes[producer[tensor]].op_type == "QuantizeLinear":
            tensor = nodes[producer[tensor]].input[0]  # skip the int8 tensor between Q and DQ
        found.append(tensor)
    return tuple(found)


def with_layer_outputs(model: onnx.ModelProto, layer_map: LayerMap, layers: Iterable[str] = LAYERS,
                       use_alias: dict[str, int] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose graph outputs are its own plus each layer's output tensor (Polygraphy's
    ``--onnx-outputs``): what ONNX Runtime, OpenVINO and TensorRT then return. ``use_alias[layer] = k`` marks the
    k-th alias instead. The types come from shape inference, so fp16 tensors stay fp16 outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    present = {o.name for o in copy.graph.output}
    for name in layers:
        k = (use_alias or {}).get(name)
        tensor = layer_map.outputs[name] if k is None else layer_map.aliases[name][k]
        if tensor not in present:
            copy.graph.output.append(helper.make_tensor_value_info(tensor, types.get(tensor, TensorProto.FLOAT),
                                                                   None))
            present.add(tensor)
    return copy
