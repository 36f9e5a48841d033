"""LRN formulations and the fp16 cast on small hand-built graphs: each must equal PyTorch's LRN."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from export.lrn import LRN_FORMULATIONS, is_lrn_node, lower_lrn, with_lrn_ops
from export.precision import convert_to_fp16
from export.spec import ir_version_for
from trainer.model import AlexNet


def _lrn_graph(channels: int, size: int, alpha: float, beta: float, k: float) -> onnx.ModelProto:
    shape = ["n", channels, 5, 6]
    node = helper.make_node("LRN", ["x"], ["y"], name="native", size=size, alpha=alpha, beta=beta, bias=k)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=ir_version_for(20))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


@pytest.mark.parametrize("formulation", LRN_FORMULATIONS)
@pytest.mark.parametrize("channels,size,alpha,beta,k", [
    (96, 5, 1e-4, 0.75, 2.0),   # AlexNet's constants (the Sqrt path)
    (7, 3, 1e-2, 0.5, 1.0),     # general beta (the Pow path), fewer channels than an NCHWc block
    (3, 5, 1e-1, 0.75, 1.0),    # window wider than the channel count
])
def test_lrn_formulations_match_torch(formulation, channels, size, alpha, beta, k):
    x = np.random.default_rng(0).normal(0, 3, (2, channels, 5, 6)).astype(np.float32)
    model = lower_lrn(_lrn_graph(channels, size, alpha, beta, k), formulation)
    onnx.checker.check_model(model, full_check=True)
    expected = torch.nn.functional.local_response_norm(torch.from_numpy(x), size, alpha, beta, k).numpy()
    np.testing.assert_allclose(_run(model, x), expected, rtol=1e-5, atol=1e-6)
    assert all(is_lrn_node(n) for n in model.graph.node)
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["LRN"] if formulation == "native" else ("LRN" not in ops and "Conv" in ops)


def test_even_lrn_size_is_refused_at_export():
    model = AlexNet(4)
    model.features.lrn1.size = 4
    with pytest.raises(ValueError, match="odd"):
        with_lrn_ops(model)


def test_lower_lrn_rejects_unknown_formulation():
    with pytest.raises(ValueError, match="conv, native"):
        lower_lrn(_lrn_graph(8, 5, 1e-4, 0.75, 2.0), "pool")


def test_with_lrn_ops_replaces_every_lrn_module():
    model, params = with_lrn_ops(AlexNet(4))
    assert [p.size for p in params] == [5, 5] and params[0].k == 2.0
    assert not any(isinstance(m, torch.nn.LocalResponseNorm) for m in model.modules())


def test_fp16_cast_keeps_lrn_and_io_in_fp32():
    channels = 16
    shape = ["n", channels, 5, 6]
    w = helper.make_tensor("w", TensorProto.FLOAT, [channels, channels, 1, 1],
                           np.random.default_rng(1).normal(0, 0.3, channels * channels).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("LRN", ["c"], ["y0"], name="native", size=5, alpha=1e-4, beta=0.75, bias=2.0),
             helper.make_node("Relu", ["y0"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [w])
    model = lower_lrn(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)],
                                        ir_version=ir_version_for(20)), "conv")
    x = np.random.default_rng(0).normal(0, 3, (2, channels, 5, 6)).astype(np.float32)
    expected = _run(model, x)
    half = convert_to_fp16(model, keep_fp32=is_lrn_node)
    onnx.checker.check_model(half, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(half, strict_mode=True)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    lrn_nodes = [n for n in half.graph.node if is_lrn_node(n)]
    assert lrn_nodes and all(types.get(t, TensorProto.FLOAT) == TensorProto.FLOAT
                             for n in lrn_nodes for t in n.output)
    assert {i.name: i.data_type for i in half.graph.initializer}["w.fp16"] == TensorProto.FLOAT16
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    np.testing.assert_allclose(_run(half, x), expected, rtol=1e-2, atol=1e-2)
