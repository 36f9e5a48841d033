"""Profilers' node names → layers, on names each runtime really reported for the exporter's AlexNet graphs (ONNX
Runtime 1.31 and OpenVINO 2026.4 profiles of the demo model; TensorRT's naming as its profiler reports it)."""
from __future__ import annotations

import pytest

from deploy.layers.attribute import (ProfiledNode, attribute, candidates_openvino, candidates_ort,
                                     candidates_tensorrt)
from export.layers import LAYERS, map_layers

# ONNX Runtime, fp32 conv-LRN file, batch 8: (node, op) in execution order, as its session profile lists them.
ORT_FP32 = [("relu_nchwc", "Conv"), ("ReorderOutput_token_21", "ReorderOutput"), ("lrn1.square", "Mul"),
            ("lrn1.d_nchwc", "Conv"), ("ReorderOutput", "ReorderOutput"), ("lrn1.sqrt", "Sqrt"),
            ("lrn1.scale", "Div"), ("ReorderInput", "ReorderInput"), ("max_pool2d_nchwc", "MaxPool"),
            ("relu_1_nchwc", "Conv"), ("lrn2.scale", "Div"), ("ReorderInput_token_12", "ReorderInput"),
            ("max_pool2d_1_nchwc", "MaxPool"), ("relu_2_nchwc", "Conv"), ("relu_3_nchwc", "Conv"),
            ("relu_4_nchwc", "Conv"), ("max_pool2d_2_nchwc", "MaxPool"), ("ReorderOutput_token_24", "ReorderOutput"),
            ("node_Reshape_7", "Reshape"), ("fused node_linear", "FusedGemm"), ("fused node_linear_1", "FusedGemm"),
            ("node_linear_2", "Gemm")]
ORT_FP32_LAYERS = ["conv1", "lrn1", "lrn1", "lrn1", "lrn1", "lrn1", "lrn1", "pool1", "pool1", "conv2", "lrn2",
                   "pool2", "pool2", "conv3", "conv4", "conv5", "pool5", "pool5", "pool5", "fc6", "fc7", "fc8"]
# ONNX Runtime, int8 conv-LRN file: QDQ fusions and moved quantisation.
ORT_INT8 = [("input_QuantizeLinear", "QuantizeLinear", "conv1"), ("Transpose", "Transpose", "conv1"),
            ("node_conv2d_token_43", "QLinearConv", "conv1"), ("conv2d_DequantizeLinear", "DequantizeLinear", "conv1"),
            ("lrn1.window_sum_token_47", "QLinearConv", "lrn1"), ("lrn_q", "QuantizeLinear", "lrn1"),
            ("node_max_pool2d_token_81", "NhwcMaxPool", "pool1"), ("node_conv2d_4_token_67", "QLinearConv", "conv5"),
            ("Transpose_token_66", "Transpose", "conv5"), ("relu_4_q", "QuantizeLinear", "conv5"),
            ("node_linear", "QGemm", "fc6"), ("linear_1_DequantizeLinear", "DequantizeLinear", "fc7"),
            ("node_linear_1_bias_dq", "DequantizeLinear", "fc7")]
# ONNX Runtime, fp16 file: the CPU provider runs the fp16 convolutions in fp32 and says so in their names.
ORT_FP16 = [("InsertedPrecisionFreeCast_relu_nchwc", "Conv", "conv1"), ("lrn1.scale", "Div", "lrn1"),
            ("InsertedPrecisionFreeCast_max_pool2d_nchwc", "MaxPool", "pool1"),
            ("InsertedPrecisionFreeCast_relu_1_nchwc", "Conv", "conv2"), ("fused node_linear", "FusedGemm", "fc6")]
# OpenVINO, int8 native-LRN file (executed nodes only; fc8 is int8 too in this plan, export/qdq.py).
OV_INT8 = [("input_QuantizeLinear", "Subgraph", "conv1"),
           ("input_QuantizeLinear_abcd_acdb_node_conv2d/WithoutBiases", "Reorder", "conv1"),
           ("node_conv2d/WithoutBiases", "Convolution", "conv1"),
           ("node_conv2d/WithoutBiases_acdb_aBcd16b_lrn1", "Reorder", "lrn1"), ("lrn1", "LRN", "lrn1"),
           ("node_max_pool2d", "MaxPool", "pool1"), ("max_pool2d_QuantizeLinear", "Subgraph", "pool1"),
           ("max_pool2d_QuantizeLinear_aBcd16b_acdb_node_conv2d_1/WithoutBiases", "Reorder", "conv2"),
           ("node_conv2d_1/WithoutBiases", "GroupConvolution", "conv2"),
           ("node_max_pool2d_2_acdb_abcd_node_Reshape_7", "Reorder", "pool5"),
           ("view_QuantizeLinear", "Subgraph", "pool5"),
           ("node_linear/WithoutBiases/DequantizationMultiply", "FullyConnectedQuantizedLegacy", "fc6"),
           ("node_linear_1/WithoutBiases/DequantizationMultiply", "FullyConnectedQuantizedLegacy", "fc7"),
           ("node_linear_2/WithoutBiases/DequantizationMultiply", "FullyConnectedQuantizedLegacy", "fc8")]


@pytest.fixture(scope="module")
def maps(small):
    return {form: map_layers(small.forms[form]) for form in ("fp32-conv", "fp16-conv", "int8-conv", "int8-native")}


def test_onnxruntime_fp32_profile(maps):
    nodes = [ProfiledNode(name, op, 1.0) for name, op in ORT_FP32]
    times, stray = attribute(nodes, maps["fp32-conv"], candidates_ort)
    assert not stray
    expected = {name: ORT_FP32_LAYERS.count(name) for name in LAYERS}
    assert {t.layer: t.nodes for t in times} == expected
    # The reorders go to the layer that reads them: around the LRN to lrn1, before the pool to pool1.
    layout = {t.layer: t.layout_ms for t in times if t.layout_ms}
    assert layout == {"lrn1": 2.0, "pool1": 1.0, "pool2": 1.0, "pool5": 1.0}
    assert sum(t.share for t in times) == pytest.approx(1.0) and sum(t.ms for t in times) == len(nodes)


@pytest.mark.parametrize("names,form,candidates", [(ORT_INT8, "int8-conv", candidates_ort),
                                                   (ORT_FP16, "fp16-conv", candidates_ort),
                                                   (OV_INT8, "int8-native", candidates_openvino)],
                         ids=["onnxruntime-int8", "onnxruntime-fp16", "openvino-int8"])
def test_renamed_nodes(maps, names, form, candidates):
    nodes = [ProfiledNode(name, op, 2.0) for name, op, _ in names]
    times, stray = attribute(nodes, maps[form], candidates)
    assert not stray
    want: dict[str, int] = {}
    for _, _, layer in names:
        want[layer] = want.get(layer, 0) + 1
    assert {t.layer: t.nodes for t in times if t.nodes} == want


def test_tensorrt_names(maps):
    layer_map = maps["fp32-conv"]
    nodes = [ProfiledNode("node_conv2d + node_relu", "", 1.0),
             ProfiledNode("Reformatting CopyNode for Input Tensor 0 to lrn1.square", "Reformat", 0.5),
             ProfiledNode("lrn1.square", "", 1.0),
             ProfiledNode("{ForeignNode[node_linear...node_linear_2]}", "", 3.0)]
    times, stray = attribute(nodes, layer_map, candidates_tensorrt)
    by = {t.layer: t for t in times}
    assert not stray and by["conv1"].ms == 1.0 and by["lrn1"].ms == 1.5 and by["lrn1"].layout_ms == 0.5
    assert by["fc6"].ms == 3.0  # a region fused across layers counts in its first


def test_unknown_nodes_are_listed_not_guessed(maps):
    nodes = [ProfiledNode("node_conv2d", "Conv", 1.0), ProfiledNode("mystery_kernel", "Custom", 4.0)]
    times, stray = attribute(nodes, maps["fp32-conv"], candidates_ort)
    assert [n.name for n in stray] == ["mystery_kernel"]
    assert sum(t.ms for t in times) == 1.0  # its time is not put into any layer
