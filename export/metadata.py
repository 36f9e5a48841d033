"""The ONNX metadata contract: what an exported file says about itself, so any runtime can preprocess and label."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import onnx

PREFIX = "alexnet_deploy."


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
    lrn: str = ""                          # how LRN was exported (e.g. "native", "conv-band"), for reports
    data_path: str | None = None           # the training images, for real-image parity when still present
    val_split: float | None = None
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}


def write_metadata(model: onnx.ModelProto, meta: OnnxMeta) -> None:
    """Replace the model's alexnet_deploy.* metadata properties with ``meta`` (in memory)."""
    keep = [p for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(source: str | os.PathLike | onnx.ModelProto) -> OnnxMeta | None:
    """The file's metadata, or None for an ONNX file not written by this tool. Reads only the header when given a
    path (``load_external_data=False``)."""
    model = source if isinstance(source, onnx.ModelProto) else onnx.load(os.fspath(source), load_external_data=False)
    props: dict[str, Any] = {}
    for p in model.metadata_props:
        if p.key.startswith(PREFIX):
            props[p.key[len(PREFIX):]] = json.loads(p.value)
    if "class_names" not in props:
        return None
    known = OnnxMeta.__dataclass_fields__
    return OnnxMeta(**{k: v for k, v in props.items() if k in known})
