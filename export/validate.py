"""validate_onnx: the structural checks of an exported file (checker, strict shape inference, the I/O contract)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx

from core.contract import INPUT_SHAPE
from core.errors import first_line
from export.errors import ExportError

log = logging.getLogger(__name__)

# Ops that must never survive an eval-mode export: TensorRT rejects training-mode Dropout, and the rest would mean
# the graph was traced in training mode.
FORBIDDEN_OPS = ("Dropout", "BatchNormalization")


def validate_onnx(path: str | os.PathLike, *, input_name: str, output_name: str, num_classes: int,
                  batch: int | None, ir_version: int, opset: int) -> onnx.ModelProto:
    """Check a written ONNX file: ``onnx.checker`` (full check), strict shape inference, and the I/O contract.

    Returns:
        The loaded model.

    Raises:
        ExportError: listing every problem found.
    """
    path = Path(path)
    try:
        onnx.checker.check_model(os.fspath(path), full_check=True)
        model = onnx.load(os.fspath(path))
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"the exported graph is invalid: {first_line(e)}") from None
    problems = []
    if model.ir_version != ir_version:
        problems.append(f"IR version {model.ir_version}, expected {ir_version}")
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if default_opset != opset:
        problems.append(f"opset {default_opset}, expected {opset}")
    bad_ops = sorted({n.op_type for n in model.graph.node if n.op_type in FORBIDDEN_OPS})
    if bad_ops:
        problems.append(f"training-only ops in the graph: {', '.join(bad_ops)}")
    batch_dim = batch if batch is not None else "batch"
    problems += _check_io(model.graph.input, input_name, [batch_dim, *INPUT_SHAPE], "input")
    problems += _check_io(inferred.graph.output, output_name, [batch_dim, num_classes], "output")
    if problems:
        raise ExportError(f"{path.name} does not meet the export contract: " + "; ".join(problems))
    return model


def _check_io(values, name: str, expected: list, kind: str) -> list[str]:
    values = list(values)
    if len(values) != 1 or values[0].name != name:
        return [f"graph {kind}s are {[v.name for v in values]}, expected [{name!r}]"]
    tensor = values[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        return [f"{kind} {name!r} has element type {onnx.TensorProto.DataType.Name(tensor.elem_type)}, expected FLOAT"]
    dims = [d.dim_param if d.HasField("dim_param") else d.dim_value if d.HasField("dim_value") else "?"
            for d in tensor.shape.dim]
    return [] if dims == expected else [f"{kind} {name!r} has shape {dims}, expected {expected}"]
