"""What an ONNX file declares without running it: I/O specs, precision, content hash."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from runtimes.base import TensorSpec
from runtimes.errors import RuntimeLoadError

# ONNX TensorProto element types → NumPy dtype names (the ones these models use).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str                     # fp32 | fp16 | int8, from the metadata or the graph
    dim_names: tuple[tuple[str | None, ...], ...]  # per input: symbolic dim names ("batch") or None

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
    inputs, names = [], []
    for value in model.graph.input:
        if value.name in initializers:  # old exporters list weights as inputs
            continue
        spec, dims = _spec(value)
        inputs.append(spec)
        names.append(dims)
    outputs = tuple(_spec(v)[0] for v in model.graph.output)
    meta = read_metadata(model)
    precision = meta.precision if meta and meta.precision else detect_precision(model)
    return OnnxInfo(path, tuple(inputs), outputs, precision, tuple(names))


def _spec(value) -> tuple[TensorSpec, tuple[str | None, ...]]:
    tensor = value.type.tensor_type
    shape, names = [], []
    for d in tensor.shape.dim:
        fixed = d.HasField("dim_value") and d.dim_value > 0
        shape.append(int(d.dim_value) if fixed else None)
        names.append(None if fixed else (d.dim_param or None))
    return TensorSpec(value.name, tuple(shape), _ONNX_DTYPES.get(tensor.elem_type, f"onnx-type-{tensor.elem_type}")), \
        tuple(names)


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
    _hash_into(digest, path)
    for location in locations:
        digest.update(location.encode())
        _hash_into(digest, path.parent / location)
    return digest.hexdigest()


def _hash_into(digest, path: str | os.PathLike, chunk_bytes: int = 8 << 20) -> None:
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
