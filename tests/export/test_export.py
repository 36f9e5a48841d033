"""Checkpoint → ONNX → ONNX Runtime round trips: parity per precision, graph contract, metadata, batch handling."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from core.onnx_file import read_metadata
from runtimes.parity import compare_outputs
from core.contract import EXPORT_PRECISIONS
from export.spec import ExportSpec, tolerance_for
from trainer.checkpoint import load_checkpoint
from core.fileio import sha256_file


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_logits(checkpoint, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return load_checkpoint(checkpoint).build_model()(torch.from_numpy(x)).numpy()


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 227, 227), dtype=np.float32)


@pytest.mark.parametrize("precision", EXPORT_PRECISIONS)
def test_round_trip_matches_pytorch(exported, checkpoint, precision):
    result = exported(precision)
    assert result.path.is_file() and result.sha256 == sha256_file(result.path)
    assert [r.inputs for r in result.parity] == ["random", "images"] and all(r.passed for r in result.parity)
    assert result.accuracy is not None and result.accuracy["images"] == 6
    x = _images(5, seed=7)  # inputs the export itself never saw
    report = compare_outputs({"logits": _torch_logits(checkpoint, x)},
                             {"logits": _session(result.path).run(None, {"input": x})[0]}, tolerance_for(precision))
    assert report.passed, str(report)


def test_fp32_graph_contract(exported):
    model = onnx.load(str(exported("fp32").path))
    assert model.ir_version == 10 and [(o.domain, o.version) for o in model.opset_import] == [("", 20)]
    ops = [n.op_type for n in model.graph.node]
    assert "Dropout" not in ops and "LRN" not in ops and ops.count("Gemm") == 3
    groups = [next((a.i for a in n.attribute if a.name == "group"), 1) for n in model.graph.node if n.op_type == "Conv"]
    assert groups.count(2) == 3  # conv2, conv4, conv5
    (inp,), (out,) = model.graph.input, model.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("input", ["batch", 3, 227, 227])
    assert (out.name, dims(out)) == ("logits", ["batch", 6])
    assert not model.graph.initializer[0].HasField("data_location") or model.graph.initializer[0].data_location == 0


def test_metadata_describes_the_model(exported, checkpoint, shapes_data):
    result = exported("fp32")
    meta = read_metadata(result.path)
    ckpt = load_checkpoint(checkpoint)
    assert meta.class_names == ckpt.class_names and meta.mean == ckpt.meta["mean"] and meta.std == ckpt.meta["std"]
    assert meta.input_shape == [3, 227, 227] and meta.precision == "fp32" and meta.lrn == "conv"
    assert meta.checkpoint_sha256 == sha256_file(ckpt.path) and meta.checkpoint_path == str(ckpt.path.resolve())
    assert meta.data_path == str(shapes_data) and meta.val_split == 0.2 and meta.seed == 0
    assert {"torch", "onnx", "onnxruntime", "alexnet-deploy"} <= set(meta.versions)


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch(exported, checkpoint, batch):
    x = _images(batch, seed=batch)
    logits = _session(exported("fp32").path).run(None, {"input": x})[0]
    assert logits.shape == (batch, 6)
    assert compare_outputs({"l": _torch_logits(checkpoint, x)}, {"l": logits}, tolerance_for("fp32")).passed


def test_static_batch(exported):
    result = exported("fp32", batch=2)
    session = _session(result.path)
    assert session.get_inputs()[0].shape == [2, 3, 227, 227] and session.get_outputs()[0].shape == [2, 6]
    assert result.parity[1].samples == 6  # 6 images in batches of 2
    with pytest.raises(InvalidArgument, match="(?i)dimension|shape"):
        session.run(None, {"input": _images(3, seed=0)})


def test_fp16_weights_half_lrn_and_io_float(exported):
    model = onnx.load(str(exported("fp16").path))
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types["features.conv1.weight.fp16"] == TensorProto.FLOAT16
    assert types["classifier.fc6.weight.fp16"] == TensorProto.FLOAT16
    assert types["lrn1.band"] == TensorProto.FLOAT and types["lrn2.band"] == TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert read_metadata(model).precision == "fp16"


def test_int8_is_symmetric_per_channel_with_float_bias(exported):
    model = onnx.load(str(exported("int8").path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
    weights = sorted(n.input[0] for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in inits)
    # conv1-5, the two LRN window sums, fc6, fc7; fc8 (the logits) stays fp32; biases stay float (no int32 DQ)
    assert [w.split("_quantized")[0] for w in weights] == sorted(
        [f"features.conv{i}.weight" for i in range(1, 6)] + ["lrn1.band", "lrn2.band"]
        + ["classifier.fc6.weight", "classifier.fc7.weight"])
    assert all(inits[n.input[1]].size > 1 for n in qdq if n.input[0] in weights)  # per-channel scales
    producers = {o: n for n in model.graph.node for o in n.output}
    sqrts = [n for n in model.graph.node if n.name.endswith(".sqrt")]  # d = k + sum is formed in fp32 (not int8)
    assert len(sqrts) == 2 and all(producers[n.input[0]].name.endswith(".add_k") for n in sqrts)
    assert model.ir_version == 10 and read_metadata(model).precision == "int8"


def test_native_lrn_formulation(exported):
    result = exported("fp32", lrn="native")
    ops = [n.op_type for n in onnx.load(str(result.path)).graph.node]
    assert ops.count("LRN") == 2 and all(r.passed for r in result.parity)
    assert read_metadata(result.path).lrn == "native"


def test_atol_rtol_overrides_keep_each_input_kinds_gates():
    spec = ExportSpec(precision="int8", atol=0.5, rtol=0.1)
    for kind in ("random", "images"):
        default, resolved = tolerance_for("int8", kind), spec.resolved_tolerance(kind)
        assert (resolved.atol, resolved.rtol, resolved.elementwise) == (0.5, 0.1, True)
        assert (resolved.min_cosine, resolved.min_top1_agreement) == (default.min_cosine, default.min_top1_agreement)
