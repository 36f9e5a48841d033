"""A profiler's node names → AlexNet's layers: each runtime renames the graph's nodes as it fuses and reorders them
(``relu_nchwc``, ``node_conv2d/WithoutBiases``, ``node_conv2d + node_relu``); this undoes the renaming and sums the
time per layer."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

from export.layers import LAYERS, LayerMap

# Node types that only move data between layouts or precisions; each is attributed to the layer of the next node the
# runtime executes, which reads what it wrote (the layer it serves).
LAYOUT_OPS = frozenset({"ReorderInput", "ReorderOutput", "Transpose", "Reorder", "Reformat", "Shuffle", "Convert"})


@dataclass(frozen=True)
class ProfiledNode:
    """One node as a profiler reports it, averaged over the profiled runs."""
    name: str
    op: str
    ms: float


@dataclass(frozen=True)
class LayerTime:
    """One layer's time in a profile: everything the runtime ran for it, layout conversions included."""
    layer: str
    ms: float
    share: float                     # of the profiler's attributed total, 0-1
    layout_ms: float                 # of which layout conversions (reorders, transposes) it needed
    nodes: int                       # how many of the runtime's nodes ran for it

    def to_dict(self) -> dict:
        return asdict(self)


def candidates_ort(name: str) -> list[str]:
    """ONNX Runtime: ``fused node_linear``, ``relu_nchwc`` (NCHWc conv named after its output), ``lrn1.d_nchwc``,
    ``node_conv2d_token_43`` (a QDQ fusion), ``lrn_q`` / ``relu_4_q`` / ``relu_4_pre_q`` (moved quantisation),
    ``InsertedPrecisionFreeCast_relu_nchwc`` (an fp16 node the CPU provider runs in fp32), ``node_linear_1_bias_dq``
    (the int32 bias DequantizeLinear ONNX Runtime adds for a quantized Conv/Gemm)."""
    base = name.removeprefix("InsertedPrecisionFreeCast_").removeprefix("fused ")
    stripped = re.sub(r"(_token_\d+)+$", "", base)
    out = [name, base, stripped, re.sub(r"_nchwc$", "", stripped)]
    out += [re.sub(r"_(pre_q|q|quant|bias_dq)$", "", out[-1])]
    return out


def candidates_openvino(name: str) -> list[str]:
    """OpenVINO: ``node_conv2d/WithoutBiases``, ``node_linear/WithoutBiases/DequantizationMultiply``, the ONNX tensor
    name of an output (``logits``)."""
    return [name, name.split("/", 1)[0]]


def candidates_tensorrt(name: str) -> list[str]:
    """TensorRT: fused layers joined by `` + ``, Myelin regions ``{ForeignNode[first...last]}``, reformats ``...
    to node_conv2d``; the first part that names a node of the graph wins."""
    parts = [p.strip() for p in re.split(r" \+ |\.\.\.|[\[\]{}]", name) if p.strip()]
    tail = re.findall(r" to (\S+)$", name)
    return [name, *[p.removeprefix("ForeignNode") for p in parts], *tail]


def candidates_plain(name: str) -> list[str]:
    return [name]


def resolve(name: str, layer_map: LayerMap, candidates: Callable[[str], Iterable[str]]) -> str | None:
    """The layer a profiled node belongs to, or None when no variant of its name is a node or tensor of the graph."""
    if name in LAYERS:
        return name
    for candidate in candidates(name):
        layer = layer_map.layer_of(candidate)
        if layer is not None:
            return layer
    return None


def attribute(nodes: Sequence[ProfiledNode], layer_map: LayerMap,
              candidates: Callable[[str], Iterable[str]]) -> tuple[tuple[LayerTime, ...], tuple[ProfiledNode, ...]]:
    """Per-layer times from nodes in execution order, and the nodes that belong to no layer.

    A node is attributed by its name; a layout conversion whose name says nothing (``ReorderOutput_token_21``) goes
    to the next node executed that is attributed, the one that reads its output (the last layer at the very end).
    """
    layers: list[str | None] = [resolve(n.name, layer_map, candidates) for n in nodes]
    layout = [n.op in LAYOUT_OPS for n in nodes]
    following: str | None = None
    for i in reversed(range(len(nodes))):
        if layout[i]:
            layers[i] = following or LAYERS[-1]
        elif layers[i] is not None:
            following = layers[i]
    totals = {name: [0.0, 0.0, 0] for name in LAYERS}
    for node, layer, is_layout in zip(nodes, layers, layout):
        if layer is not None:
            totals[layer][0] += node.ms
            totals[layer][1] += node.ms if is_layout else 0.0
            totals[layer][2] += 1
    attributed = sum(t[0] for t in totals.values())
    times = tuple(LayerTime(name, ms, ms / attributed if attributed > 0 else 0.0, layout_ms, count)
                  for name, (ms, layout_ms, count) in totals.items())
    stray = tuple(n for n, layer in zip(nodes, layers) if layer is None)
    return times, stray
