"""Precision as a property of the ONNX graph: an fp16 cast with fp32 islands, and explicit symmetric int8 (Q/DQ).

TensorRT 11 builds strongly typed networks only, so whatever precision a runtime should use must be written into the
graph itself; every runtime then runs the same file.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError

log = logging.getLogger(__name__)

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
# What int8 quantizes. Measured on ONNX Runtime CPU (docs/export.md): Conv (including the LRN's window-sum Conv) and
# Gemm are where the time goes, and their QLinearConv/QGemm kernels are 2-4x faster than fp32; quantizing the LRN's
# element-wise ops, pooling or ReLU only adds Q/DQ passes.
INT8_OP_TYPES = ("Conv", "Gemm", "MatMul")


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


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over NumPy batches."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)
        self._input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_int8(model: onnx.ModelProto, batches: Iterable[np.ndarray], *, input_name: str,
                  exclude: Iterable[str] = ()) -> onnx.ModelProto:
    """Explicit int8 quantization that TensorRT 11 accepts and ONNX Runtime fuses into QLinearConv/QGemm.

    Symmetric int8 activations and weights (all zero points 0, as TensorRT's explicit quantization requires),
    per-channel weight scales, float biases (TensorRT's DequantizeLinear takes no int32), MinMax ranges from the
    calibration batches, and only ``INT8_OP_TYPES`` quantized, minus the ``exclude`` node names (the LRN) and the
    layer that produces the logits.

    Args:
        model: The fp32 model (with its LRN already lowered).
        batches: Calibration inputs, ``N x 3 x 227 x 227`` float32, preprocessed like the validation images.
        input_name: The graph input to feed.
        exclude: Node names to keep in fp32.

    Calibration is MinMax: "entropy" gave identical scales here and "percentile" 99.999 a lower agreement
    (docs/export.md).

    Raises:
        ExportError: a zero point came out non-zero (never expected with these options).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    outputs = {o.name for o in model.graph.output}
    # The layer that produces the logits stays fp32 (its 4 MB of weights are noise next to fc6/fc7): int8 logits
    # would round every score to 1/254 of the largest and flip near-ties, and ONNX Runtime only fuses a quantized
    # Gemm into QGemm when its output is quantized too.
    exclude = list(exclude) + [n.name for n in model.graph.node if any(o in outputs for o in n.output)]
    # The MaxPools are left to ONNX Runtime's QDQ propagation, which moves the Q after each one in front of it: the
    # pool then runs on int8 in NHWC between the QLinearConvs (exact, as max commutes with a monotonic Q) and the
    # float NHWC<->NCHW transposes around it disappear. An fp32 MaxPool (kept by a Relu after it, as this exporter
    # did before its LRN window sum was quantized) made the whole model 1.20x slower at batch 32 (benchmarks/export.py).
    with tempfile.TemporaryDirectory(prefix="alexnet-quant-") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        quantize_static(
            str(src), str(dst), _Reader(input_name, batches), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(INT8_OP_TYPES), per_channel=True, reduce_range=False,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
        quantized = onnx.load(dst)
    _check_symmetric(quantized)
    return quantized


def _check_symmetric(model: onnx.ModelProto) -> None:
    """Every Q/DQ must be int8 with zero point 0: TensorRT rejects anything else."""
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = inits.get(node.input[2])
            if zp is None:
                continue
            values = numpy_helper.to_array(zp)
            if values.dtype != np.int8 or np.any(values != 0):
                raise ExportError(f"int8 quantization produced {node.name} with zero point {values.ravel()[:4]} "
                                  f"({values.dtype}); TensorRT needs symmetric int8 (zero point 0)")


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
