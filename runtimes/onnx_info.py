"""What an ONNX file declares without running it: I/O specs, precision, content hash."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtimes.base import TensorSpec
from runtimes.errors import RuntimeLoadError
from trainer.fileio import update_digest

if TYPE_CHECKING:
    from export.metadata import OnnxMeta

# ONNX TensorProto element types → NumPy dtype names (the ones these models use).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str                     # fp32 | fp16 | int8, from the metadata or the graph
    meta: OnnxMeta | None = None     # the alexnet-deploy metadata, when the exporter wrote it

    @property
    def static_batch(self) -> int | None:
        """The first input's fixed batch size, or None when the batch is dynamic."""
        return self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None


def read_onnx_info(path: str | os.PathLike) -> OnnxInfo:
    """Read the graph header (no external weights).

    Raises:
        RuntimeLoadError: the file is missing or not a readable ONNX model.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from export.metadata import read_metadata

    path = Path(path)
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as e:
        raise RuntimeLoadError(f"{path} is not a readable ONNX model: {e}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)  # old exporters list weights
    outputs = tuple(_spec(v) for v in model.graph.output)
    meta = read_metadata(model)
    precision = meta.precision if meta and meta.precision else detect_precision(model)
    return OnnxInfo(path, inputs, outputs, precision, meta)


def _spec(value) -> TensorSpec:
    tensor = value.type.tensor_type
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                  for d in tensor.shape.dim)
    return TensorSpec(value.name, shape, _ONNX_DTYPES.get(tensor.elem_type, f"onnx-type-{tensor.elem_type}"))


def detect_precision(model) -> str:
    """int8 if the graph has quantization ops, fp16 if it holds fp16 weights, else fp32."""
    ops = {n.op_type for n in model.graph.node}
    if ops & _QUANT_OPS:
        return "int8"
    if any(i.data_type == 10 for i in model.graph.initializer):
        return "fp16"
    return "fp32"


def model_sha256(path: str | os.PathLike) -> str:
    """sha256 over the ONNX file and every external-data file it references, so new weights give a new hash."""
    import onnx

    path = Path(path)
    model = onnx.load(os.fspath(path), load_external_data=False)
    locations = sorted({e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"})
    digest = hashlib.sha256()
    update_digest(digest, path)
    for location in locations:
        digest.update(location.encode())
        update_digest(digest, path.parent / location)
    return digest.hexdigest()
