"""Explicit int8 (Q/DQ) for the exported AlexNet: where the pairs go per LRN form, per-channel weights, TensorRT rules.

Both forms quantize what TensorRT 11's explicit quantization accepts: symmetric int8 (every zero point 0, given
explicitly so the type is int8), per-tensor scales on activations, per-output-channel scales on weights, float biases,
and every QuantizeLinear followed only by DequantizeLinears. Where the pairs go is chosen per runtime, measured with
both runtimes' profilers (docs/export.md, "int8"):

* ``native`` (one LRN node; the OpenVINO and TensorRT file): a pair on each quantized layer's *input* only. ReLU stays
  between a convolution and the next pair, so OpenVINO and TensorRT fuse it into the int8 convolution and each
  activation is rounded once, after the ReLU (not before it and again after). fc8 is quantized too: a quarter of its
  16 MB of fp32 weights at batch 1.
* ``conv`` (banded-conv LRN; the ONNX Runtime file): also a pair on each quantized Conv/Gemm *output*, because ONNX
  Runtime fuses only ``DQ -> Conv -> Q`` into QLinearConv (a ReLU before the Q leaves an fp32 FusedConv) and only a
  Gemm with a quantized output into QGemm. The logits layer fc8 stays fp32 in this form (an int8 output would round
  every score to 1/254 of the largest; without one ONNX Runtime de-quantizes its weights on every call).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.layers import LAYERS, map_layers

INT8_MAX = 127          # symmetric: [-127, 127], so a weight and its negation round alike
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
ZERO_POINT = "int8_zero_point"
Q_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class LayerPlan:
    """One quantizable layer: its weight op, the activations paired at its input/output and its weight."""
    layer: str
    node: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weight: str
    axis: int                  # the weight's output-channel axis (per-channel scales)


@dataclass(frozen=True)
class QuantPlan:
    form: str                  # "conv" or "native"
    layers: tuple[LayerPlan, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.layer for p in self.layers)

    def tensors(self, layers=None) -> list[str]:
        """The activation tensors paired when ``layers`` (default all) are quantized, in graph order."""
        chosen = [p for p in self.layers if layers is None or p.layer in layers]
        return list(dict.fromkeys(t for p in chosen for t in p.inputs + p.outputs))


def lrn_form(model: onnx.ModelProto) -> str:
    """``native`` for a graph with LRN nodes, else ``conv`` (the banded-conv lowering or no LRN at all)."""
    return "native" if any(n.op_type == "LRN" for n in model.graph.node) else "conv"


def plan_int8(model: onnx.ModelProto, exclude: frozenset[str] = frozenset()) -> QuantPlan:
    """Which layers of an fp32 AlexNet graph can be int8 and where their Q/DQ pairs go (see the module docstring).

    Args:
        model: The fp32 graph with its LRN lowered (conv form: window-sum bias already split off).
        exclude: Node names that must stay fp32 (a layer whose weight op is among them is not planned).
    """
    form = lrn_form(model)
    layer_map = map_layers(model)
    nodes = {n.name: n for n in model.graph.node}
    inits = {i.name for i in model.graph.initializer}
    logits = {o.name for o in model.graph.output}
    plans = []
    for layer in LAYERS:
        for name in layer_map.nodes[layer]:
            node = nodes[name]
            if node.op_type not in QUANTIZED_OPS or name in exclude or len(node.input) < 2 \
                    or node.input[1] not in inits:
                continue
            last = node.output[0] in logits
            if form == "conv" and last:
                continue  # see the module docstring: fp32 logits on ONNX Runtime
            outputs = (node.output[0],) if form == "conv" else ()
            plans.append(LayerPlan(layer, name, (node.input[0],), outputs, node.input[1], _weight_axis(node)))
    return QuantPlan(form, tuple(plans))


def _weight_axis(node: onnx.NodeProto) -> int:
    """Output channels: axis 0 of a Conv weight and of a Gemm's transposed B, axis 1 of MatMul / plain Gemm B."""
    if node.op_type == "Conv":
        return 0
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if node.op_type == "Gemm" and trans_b else 1


class Quantizer:
    """Builds int8 graphs of one fp32 graph for any subset of its planned layers; weights are quantized once."""

    def __init__(self, model: onnx.ModelProto, plan: QuantPlan) -> None:
        self.model, self.plan = model, plan
        self._weights: dict[str, list[onnx.TensorProto]] = {}

    def build(self, ranges: dict[str, float], layers=None) -> onnx.ModelProto:
        """The graph with ``layers`` (default: all planned) in int8, activations scaled by ``ranges`` (tensor → the
        largest magnitude to represent).

        Raises:
            ExportError: a paired tensor has no range, or the result breaks TensorRT's rules (never expected).
        """
        chosen = [p for p in self.plan.layers if layers is None or p.layer in layers]
        tensors = self.plan.tensors({p.layer for p in chosen})
        missing = [t for t in tensors if t not in ranges]
        if missing:
            raise ExportError(f"int8: no calibration range for {', '.join(missing)}")
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        graph = model.graph
        quantized = {p.weight: p for p in chosen}
        kept = [i for i in graph.initializer if i.name not in quantized]
        del graph.initializer[:]
        graph.initializer.extend(kept)
        graph.initializer.append(numpy_helper.from_array(np.array(0, np.int8), ZERO_POINT))
        prefix = [self._weight_dq(p, graph) for p in chosen]
        _pair_activations(graph, tensors, ranges, {p.weight: f"{p.weight}_DequantizeLinear_Output" for p in chosen},
                          prefix)
        problems = explicit_quantization_problems(model)
        if problems:
            raise ExportError("int8 graph breaks TensorRT's explicit-quantization rules: " + "; ".join(problems[:3]))
        return model

    def _weight_dq(self, plan: LayerPlan, graph) -> onnx.NodeProto:
        if plan.weight not in self._weights:
            weight = next(i for i in self.model.graph.initializer if i.name == plan.weight)
            self._weights[plan.weight] = quantize_weight(numpy_helper.to_array(weight), plan.weight, plan.axis)
        graph.initializer.extend(self._weights[plan.weight])
        w = plan.weight
        return helper.make_node("DequantizeLinear", [f"{w}_quantized", f"{w}_scale", f"{w}_zero_point"],
                                [f"{w}_DequantizeLinear_Output"], name=f"{w}_DequantizeLinear", axis=plan.axis)


def quantize_weight(w: np.ndarray, name: str, axis: int) -> list[onnx.TensorProto]:
    """Symmetric per-channel int8 of ``w`` along ``axis``: the int8 tensor, its scales and int8 zero points."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce).astype(np.float32)
    scale = np.where(amax > 0, amax / INT8_MAX, np.float32(1.0)).astype(np.float32)  # an all-zero channel stays 0
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
    return [numpy_helper.from_array(q, f"{name}_quantized"), numpy_helper.from_array(scale, f"{name}_scale"),
            numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_zero_point")]


def activation_scale(amax: float) -> np.float32:
    """The per-tensor scale for a range: ``amax / 127`` (a tensor that was always 0 gets a harmless 1/127)."""
    return np.float32(amax / INT8_MAX if amax > 0 and np.isfinite(amax) else 1.0 / INT8_MAX)


def _pair_activations(graph, tensors: list[str], ranges: dict[str, float], renamed: dict[str, str],
                      prefix: list[onnx.NodeProto]) -> None:
    """Insert ``Q -> DQ`` after each tensor in ``tensors``, rewire its consumers to the DQ, and point weight
    consumers at their DQ (``renamed``); ``prefix`` (the weight DQs) goes first."""
    pairs = {}
    for t in tensors:
        graph.initializer.append(numpy_helper.from_array(activation_scale(ranges[t]), f"{t}_scale"))
        pairs[t] = [helper.make_node("QuantizeLinear", [t, f"{t}_scale", ZERO_POINT], [f"{t}_QuantizeLinear_Output"],
                                     name=f"{t}_QuantizeLinear"),
                    helper.make_node("DequantizeLinear", [f"{t}_QuantizeLinear_Output", f"{t}_scale", ZERO_POINT],
                                     [f"{t}_DequantizeLinear_Output"], name=f"{t}_DequantizeLinear")]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in pairs:
                node.input[i] = f"{name}_DequantizeLinear_Output"
            elif name in renamed:
                node.input[i] = renamed[name]
    ordered = list(prefix)
    for t in [i.name for i in graph.input if i.name in pairs]:
        ordered += pairs.pop(t)
    for node in graph.node:
        ordered.append(node)
        for out in node.output:
            ordered += pairs.pop(out, [])
    del graph.node[:]
    graph.node.extend(ordered)


def explicit_quantization_problems(model: onnx.ModelProto) -> list[str]:
    """What TensorRT 11's explicit quantization would reject in ``model``: a Q/DQ without an int8 zero point of 0,
    a non-positive or non-float scale, a per-channel activation scale, a Q whose output reaches anything but a
    DequantizeLinear with the same scale, an int32 (bias) DQ, an op outside the default ONNX domain."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    problems = []
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.name}: op {node.domain}.{node.op_type} outside the ONNX domain")
        if node.op_type not in Q_OPS:
            continue
        scale, zero = (inits.get(name) for name in (list(node.input) + ["", ""])[1:3])
        if zero is None or zero.dtype != np.int8 or np.any(zero != 0):
            problems.append(f"{node.name}: zero point {'missing' if zero is None else zero.ravel()[:3]} "
                            "(TensorRT needs an int8 zero point of 0)")
        if scale is None or scale.dtype != np.float32 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{node.name}: scale must be a positive float32 initializer")
        weight = node.op_type == "DequantizeLinear" and node.input[0] in inits
        if weight and inits[node.input[0]].dtype != np.int8:
            problems.append(f"{node.name}: de-quantizes {inits[node.input[0]].dtype} (biases stay float)")
        if not weight and scale is not None and scale.size != 1:
            problems.append(f"{node.name}: per-channel scale on an activation")
        if node.op_type == "QuantizeLinear":
            for user in consumers.get(node.output[0], []):
                if user.op_type != "DequantizeLinear" or user.input[1] != node.input[1]:
                    problems.append(f"{node.name}: its int8 output reaches {user.op_type} {user.name}, not its DQ")
    return problems


def count_int8(model: onnx.ModelProto) -> int:
    """How many weight tensors the graph holds in int8."""
    return sum(i.data_type == TensorProto.INT8 and i.name.endswith("_quantized") for i in model.graph.initializer)
