"""int8 graphs: where each LRN form's Q/DQ pairs go, TensorRT's explicit-quantization rules on the result (and that
the check catches what TensorRT rejects), ONNX Runtime fusing the conv form, and calibration sizing."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.calibration import calibrate
from export.qdq import Quantizer, explicit_quantization_problems, plan_int8
from tests.export.layer_graphs import small_alexnet

ort = pytest.importorskip("onnxruntime")
CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


@pytest.fixture(scope="module")
def fp32() -> dict[str, onnx.ModelProto]:
    """The exporter's fp32 graph of a small AlexNet in both LRN forms (conv: window-sum bias split off)."""
    pytest.importorskip("onnxscript")
    from export import lrn as lrn_forms
    from export.exporter import _torch_export
    from export.spec import ExportSpec

    exported = _torch_export(small_alexnet(), ExportSpec())
    graphs = {}
    for form in ("conv", "native"):
        graphs[form] = lrn_forms.lower_lrn(copy.deepcopy(exported), form)
        if form == "conv":
            lrn_forms.prepare_lrn_for_int8(graphs[form])
    return graphs


def _noise(count: int, seed: int = 0, size: int = 227) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, size, size), dtype=np.float32)


@pytest.fixture(scope="module")
def int8(fp32) -> dict[str, onnx.ModelProto]:
    out = {}
    for form, graph in fp32.items():
        plan = plan_int8(graph)
        ranges = calibrate(graph, plan.tensors(), [_noise(4)], input_name="input", methods=("minmax",)).ranges
        out[form] = Quantizer(graph, plan).build(ranges["minmax"])
    return out


def test_native_form_pairs_each_quantized_layer_input_only(fp32):
    plan = plan_int8(fp32["native"])
    assert plan.form == "native" and plan.names == (*CONVS, "fc6", "fc7", "fc8")
    assert all(p.outputs == () and len(p.inputs) == 1 for p in plan.layers)
    nodes = {n.output[0]: n for n in fp32["native"].graph.node}
    # conv4 reads conv3's ReLU output: one pair after the ReLU, so the ReLU fuses into the int8 conv before it
    conv4 = next(p for p in plan.layers if p.layer == "conv4")
    assert nodes[conv4.inputs[0]].op_type == "Relu"


def test_conv_form_also_pairs_outputs_and_keeps_the_logits_fp32(fp32):
    plan = plan_int8(fp32["conv"])
    assert plan.names == ("conv1", "lrn1", "conv2", "lrn2", "conv3", "conv4", "conv5", "fc6", "fc7")
    assert all(len(p.outputs) == 1 for p in plan.layers)
    assert next(p for p in plan.layers if p.layer == "lrn1").weight == "lrn1.band"


@pytest.mark.parametrize("form", ["conv", "native"])
def test_int8_graphs_keep_tensorrt_rules(int8, form):
    model = int8[form]
    assert explicit_quantization_problems(model) == []
    onnx.checker.check_model(model, full_check=True)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert qdq and all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in qdq)
    weights = [n for n in qdq if n.input[0] in inits]
    assert all(inits[n.input[1]].size > 1 for n in weights)  # per-channel weight scales
    assert all(next(a.i for a in n.attribute if a.name == "axis") == 0 for n in weights)  # output channels
    assert all(inits[n.input[0]].dtype == np.int8 for n in weights)  # no int32 bias DQ


def _one_pair(zero_point, scale=np.float32(0.1), consumer="DequantizeLinear", weight=None):
    """x -> Q -> (consumer) -> y, with the given zero point and scale (or a DQ of a weight)."""
    inits = [numpy_helper.from_array(np.asarray(scale), "s")]
    inputs = ["x", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(np.asarray(zero_point), "zp"))
        inputs.append("zp")
    if weight is not None:
        inits.append(numpy_helper.from_array(weight, "w"))
        nodes = [helper.make_node("DequantizeLinear", ["w", *inputs[1:]], ["y"], name="dq")]
    else:
        follow = (helper.make_node("DequantizeLinear", ["q", *inputs[1:]], ["y"], name="dq")
                  if consumer == "DequantizeLinear" else helper.make_node(consumer, ["q"], ["y"], name="user"))
        nodes = [helper.make_node("QuantizeLinear", inputs, ["q"], name="q"), follow]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


@pytest.mark.parametrize("model, found", [
    (_one_pair(np.int8(1)), "zero point"),                            # asymmetric
    (_one_pair(np.uint8(0)), "zero point"),                           # uint8: TensorRT takes int8 only
    (_one_pair(None), "zero point missing"),                          # no zero point: uint8 by default
    (_one_pair(np.zeros(4, np.int8), np.full(4, 0.1, np.float32)), "per-channel scale on an activation"),
    (_one_pair(np.int8(0), np.float32(0.0)), "positive float32"),
    (_one_pair(np.int8(0), consumer="Relu"), "not its DQ"),
    (_one_pair(np.int32(0), weight=np.arange(4, dtype=np.int32)), "de-quantizes int32"),
])
def test_rule_check_catches_what_tensorrt_rejects(model, found):
    assert any(found in problem for problem in explicit_quantization_problems(model))


def test_onnx_runtime_fuses_the_conv_form(int8, tmp_path):
    """Every planned Conv becomes QLinearConv (none left as an fp32 FusedConv) and fc6/fc7 QGemm."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(int8["conv"].SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert ops.count("QLinearConv") == 7 and ops.count("QGemm") == 2, ops
    assert "FusedConv" not in ops and "Conv" not in ops


def test_calibration_settles_on_a_steady_stream_and_not_on_a_growing_one(tiny_onnx):
    model = onnx.load(str(tiny_onnx.path))
    tensors = ["input", model.graph.node[0].output[0]]
    steady = [_noise(16, seed=0, size=16)] * 16
    found = calibrate(model, tensors, steady, input_name="input", methods=("minmax", "entropy", "percentile"))
    # the same images again and again: nothing moves, settled after two calm doublings (32 and 64)
    assert found.images == {"minmax": 64, "entropy": 64, "percentile": 64} and all(found.settled.values())
    growing = [_noise(16, seed=i, size=16) * (1 + i) for i in range(8)]
    found = calibrate(model, tensors, growing, input_name="input", methods=("minmax",))
    assert found.images == {"minmax": 128} and not found.settled["minmax"]
    assert [t["images"] for t in found.trace] == [16, 32, 64, 128]
