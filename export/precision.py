"""Precision as a property of the ONNX graph: an fp16 cast with fp32 islands, and the plain explicit int8 recipe.

TensorRT 11 builds strongly typed networks only, so whatever precision a runtime should use must be written into the
graph itself; every runtime then runs the same file.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


log = logging.getLogger(__name__)

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: Callable[[onnx.NodeProto], bool]) -> onnx.ModelProto:
    """fp16 weights and compute, fp32 graph inputs/outputs, and fp32 for every node where ``keep_fp32`` is true.

    Casts are inserted only where a tensor crosses between the two precisions (one per tensor and direction), and the
    fp32 islands keep their own fp32 initializers (the LRN band weights stay exact).
    """
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    elem = {v.name: v.type.tensor_type.elem_type for v in
            list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    elem.update({name: i.data_type for name, i in inits.items()})
    is_float = lambda name: elem.get(name) == FLOAT  # noqa: E731
    low = [not keep_fp32(n) for n in graph.node]  # by position: protobuf wrappers have no stable identity

    # A graph output computed in fp16 gets an fp16 name; a Cast at the end restores the fp32 output under its name.
    outputs = {o.name for o in graph.output if is_float(o.name)}
    renamed = {}
    for position, node in enumerate(graph.node):
        if low[position]:
            for i, out in enumerate(node.output):
                if out in outputs:
                    renamed[out] = node.output[i] = f"{out}.fp16"
                    elem[renamed[out]] = FLOAT
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)

    dtype: dict[str, int] = {i.name: FLOAT for i in graph.input}
    casts: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}
    new_nodes, new_inits = [], []

    def as_type(name: str, want: int) -> str:
        if name in inits:
            if want == FLOAT:
                return name
            if name not in half_inits:
                half = numpy_helper.from_array(numpy_helper.to_array(inits[name]).astype(np.float16), f"{name}.fp16")
                new_inits.append(half)
                half_inits[name] = half.name
            return half_inits[name]
        if dtype.get(name, FLOAT) == want:
            return name
        if (name, want) not in casts:
            out = f"{name}.{'fp16' if want == FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}.cast", to=want))
            casts[(name, want)] = out
        return casts[(name, want)]

    for position, node in enumerate(graph.node):
        want = FLOAT16 if low[position] else FLOAT
        for i, name in enumerate(node.input):
            if name and is_float(name):
                node.input[i] = as_type(name, want)
        for out in node.output:
            if is_float(out):
                dtype[out] = want
        new_nodes.append(node)
    for original, half in renamed.items():
        new_nodes.append(helper.make_node("Cast", [half], [original], name=f"{original}.cast", to=FLOAT))

    used = {name for n in new_nodes for name in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used] + new_inits
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.value_info[:]
    return model


def quantize_int8(model: onnx.ModelProto, batches: Iterable[np.ndarray], *, input_name: str,
                  exclude: Iterable[str] = ()) -> onnx.ModelProto:
    """Every planned layer in explicit symmetric int8 (export/qdq.py) with MinMax ranges over all ``batches``: the
    plain recipe, without the accuracy-aware search of export/int8_search.py (which the exporter runs).

    Args:
        model: The fp32 model (with its LRN already lowered and, for the conv form, prepared for int8).
        batches: Calibration inputs, ``N x 3 x 227 x 227`` float32, preprocessed like the validation images.
        input_name: The graph input to feed.
        exclude: Node names to keep in fp32 (a layer whose Conv/Gemm is named here stays fp32).
    """
    from export.calibration import calibrate
    from export.qdq import Quantizer, plan_int8

    plan = plan_int8(model, frozenset(exclude))
    stats = calibrate(model, plan.tensors(), batches, input_name=input_name, methods=("minmax",), settle=False)
    return Quantizer(model, plan).build(stats.ranges["minmax"])


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
