"""The model contract every package agrees on: input shape, tensor names, precisions, LRN forms, batch bound."""
from __future__ import annotations

import math
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


def is_finite_number(value: Any) -> bool:
    """A real int or float (a bool is not one), neither NaN nor infinite: what every number read from a file must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def preprocessing_problem(class_names: Any, mean: Any, std: Any) -> str | None:
    """What is wrong with a model's class names and input normalisation as read from a file (checkpoint or ONNX
    metadata), or None: non-empty names, 3 finite means, 3 positive finite standard deviations."""
    if (not isinstance(class_names, list) or not class_names
            or not all(isinstance(c, str) and c.strip() for c in class_names)):
        return f"class_names must be a non-empty list of non-empty names, got {str(class_names)[:80]}"
    for key, value in (("mean", mean), ("std", std)):
        if (not isinstance(value, list) or len(value) != 3 or not all(is_finite_number(v) for v in value)
                or key == "std" and min(value) <= 0):
            rule = "3 positive finite numbers" if key == "std" else "3 finite numbers"
            return f"{key} must be {rule} (R, G, B), got {str(value)[:80]}"
    return None
