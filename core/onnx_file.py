"""What an ONNX file says about itself, read without running it: the alexnet-deploy metadata contract (written by
export, validated on every read), the I/O specs, the precision and the content hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.contract import EXPORT_PRECISIONS, TensorSpec, preprocessing_problem
from core.errors import ToolkitError, first_line
from core.fileio import update_digest

if TYPE_CHECKING:
    import onnx

PREFIX = "alexnet_deploy."
# ONNX TensorProto element types → NumPy dtype names (the ones these models use).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64"}
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}


class OnnxFileError(ToolkitError):
    """An ONNX file that is missing or unreadable, has no inputs or outputs, or carries malformed metadata."""


@dataclass(frozen=True)
class OnnxMeta:
    """Stored as ``metadata_props`` entries ``alexnet_deploy.<field>`` with JSON-encoded values."""
    class_names: list[str]
    mean: list[float]
    std: list[float]
    input_shape: list[int]                 # [3, 227, 227]; the batch dimension is the graph's own
    precision: str                         # "fp32" | "fp16" | "int8"
    checkpoint_sha256: str
    checkpoint_path: str                   # where the weights came from (absolute), for --reference defaults
    input_name: str = "input"
    output_name: str = "logits"
    lrn: str = ""                          # how LRN was exported ("conv" or "native"), for reports
    data_path: str | None = None           # the training images, for real-image parity when still present
    val_split: float | None = None
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    # int8 only: the calibration method chosen, the layers kept in fp32, each candidate's accuracy and speed
    # (export/int8_search.py Int8Choice.to_dict); None for other precisions and files written before it existed.
    quantization: dict | None = None

    def to_props(self) -> dict[str, str]:
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}


_REQUIRED = [f.name for f in dataclasses.fields(OnnxMeta)
             if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    precision: str                     # fp32 | fp16 | int8, from the metadata or the graph
    meta: OnnxMeta | None = None       # the alexnet-deploy metadata, when the exporter wrote it
    external_data: tuple[str, ...] = ()  # the weight files it references, relative to its folder

    @property
    def static_batch(self) -> int | None:
        """The first input's fixed batch size, or None when the batch is dynamic."""
        return self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None


def write_metadata(model: "onnx.ModelProto", meta: OnnxMeta) -> None:
    """Replace the model's alexnet_deploy.* metadata properties with ``meta`` (in memory), after validating it."""
    _validate(asdict(meta), "the metadata to write")
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(source: "str | os.PathLike | onnx.ModelProto", where: str | None = None) -> OnnxMeta | None:
    """The file's metadata, or None for an ONNX file not written by this tool (no ``alexnet_deploy.*`` entries).

    Raises:
        OnnxFileError: entries that are not JSON, required ones missing, or values that cannot be right (mean/std
            without 3 finite values, empty class names, an unknown precision).
    """
    if isinstance(source, (str, os.PathLike)):
        where, model = where or str(source), _load(Path(source))
    else:
        where, model = where or "the model", source
    props: dict[str, Any] = {}
    for p in model.metadata_props:
        if p.key.startswith(PREFIX):
            try:
                props[p.key[len(PREFIX):]] = json.loads(p.value)
            except ValueError:
                raise OnnxFileError(f"{where}: metadata entry {p.key!r} is not JSON ({p.value[:40]!r})") from None
    if not props:
        return None
    missing = [k for k in _REQUIRED if k not in props]
    if missing:
        raise OnnxFileError(f"{where}: partial alexnet-deploy metadata, missing {', '.join(missing)}; re-export the "
                            "file with `cli.py export`")
    _validate(props, where)
    known = {f.name for f in dataclasses.fields(OnnxMeta)}
    return OnnxMeta(**{k: v for k, v in props.items() if k in known})


def _validate(props: dict[str, Any], where: str) -> None:
    problem = preprocessing_problem(props.get("class_names"), props.get("mean"), props.get("std"))
    if problem:
        raise OnnxFileError(f"{where}: {problem}")
    if props.get("precision") not in EXPORT_PRECISIONS:
        raise OnnxFileError(f"{where}: precision {props.get('precision')!r}; expected one of "
                            f"{', '.join(EXPORT_PRECISIONS)}")


def _load(path: Path) -> "onnx.ModelProto":
    """The graph without external weights."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise OnnxFileError(f"ONNX file not found: {path}" if not path.exists() else f"{path} is not a regular file")
    try:
        return onnx.load(os.fspath(path), load_external_data=False)
    except (OSError, DecodeError, ValueError, RuntimeError) as e:
        raise OnnxFileError(f"{path} is not a readable ONNX model: {first_line(e)}") from None


def read_onnx_info(path: str | os.PathLike) -> OnnxInfo:
    """Read the graph's I/O, precision and metadata (external weights are not loaded).

    Raises:
        OnnxFileError: missing or unreadable file, a graph without inputs or outputs, malformed metadata.
    """
    path = Path(path)
    model = _load(path)
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_spec(v) for v in model.graph.input if v.name not in initializers)  # old exporters list weights
    outputs = tuple(_spec(v) for v in model.graph.output)
    if not inputs or not outputs:
        raise OnnxFileError(f"{path} is not a usable model: its graph has {len(inputs)} input(s) and {len(outputs)} "
                            "output(s)")
    meta = read_metadata(model, str(path))
    precision = meta.precision if meta else detect_precision(model)
    return OnnxInfo(path, inputs, outputs, precision, meta, _external_data(model))


def _external_data(model: "onnx.ModelProto") -> tuple[str, ...]:
    return tuple(sorted({e.value for i in model.graph.initializer for e in i.external_data if e.key == "location"}))


def _spec(value) -> TensorSpec:
    tensor = value.type.tensor_type
    shape = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                  for d in tensor.shape.dim)
    return TensorSpec(value.name, shape, _ONNX_DTYPES.get(tensor.elem_type, f"onnx-type-{tensor.elem_type}"))


def detect_precision(model: "onnx.ModelProto") -> str:
    """int8 if the graph has quantization ops, fp16 if it holds fp16 weights, else fp32."""
    ops = {n.op_type for n in model.graph.node}
    if ops & _QUANT_OPS:
        return "int8"
    if any(i.data_type == 10 for i in model.graph.initializer):
        return "fp16"
    return "fp32"


def model_sha256(path: str | os.PathLike, external_data: tuple[str, ...] | None = None) -> str:
    """sha256 over the ONNX file and every external-data file it references, so new weights give a new hash.
    ``external_data``: those files as :func:`read_onnx_info` found them (saves parsing the graph again)."""
    path = Path(path)
    locations = _external_data(_load(path)) if external_data is None else external_data
    digest = hashlib.sha256()
    update_digest(digest, path)
    for location in locations:
        digest.update(location.encode())
        update_digest(digest, path.parent / location)
    return digest.hexdigest()
