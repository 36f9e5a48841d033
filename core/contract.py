"""The model contract every package agrees on: input shape, tensor names, precisions, LRN forms, batch bound."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

INPUT_SIZE = 227                        # AlexNet needs a constant input size: its FC layers expect 6×6×256 features
INPUT_SHAPE = (3, INPUT_SIZE, INPUT_SIZE)
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_BATCH = 256                         # upper bound of the exported graphs' symbolic batch dimension
EXPORT_PRECISIONS = ("fp32", "fp16", "int8")  # what an ONNX graph can be exported as
# bf16 is no ONNX file of its own: it is an fp32 file run with bf16 arithmetic by a runtime that computes bf16
# natively (docs/export.md, "bf16").
PRECISIONS = (*EXPORT_PRECISIONS, "bf16")
LRN_FORMULATIONS = ("conv", "native")   # banded 1x1 conv (fastest on ONNX Runtime) or one ONNX LRN node


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as a runtime sees it."""
    name: str
    shape: tuple[int | None, ...]  # None = dynamic (the batch)
    dtype: str                     # NumPy dtype name: "float32", "float16", ...

    def shape_str(self) -> str:
        return "(" + ", ".join("N" if d is None else str(d) for d in self.shape) + ")"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        return len(shape) == len(self.shape) and all(d is None and s > 0 or d == s for d, s in zip(self.shape, shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
