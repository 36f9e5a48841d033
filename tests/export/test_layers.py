"""The node → layer map on the exporter's graphs: every precision and LRN form maps to AlexNet's 13 layers, and each
layer's output tensor holds what the PyTorch module of that layer outputs."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch

from export.layers import LAYERS, TORCH_FIRST, TORCH_OUTPUT, LayerMapError, map_layers, with_layer_outputs
from tests.export.layer_graphs import Forms, shared_forms

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def graphs() -> Forms:
    pytest.importorskip("onnxscript")
    return shared_forms()


@pytest.fixture(scope="module")
def model(graphs) -> torch.nn.Module:
    return graphs.model


def _check_map(graph: onnx.ModelProto) -> None:
    """Every node in exactly one layer, layers in AlexNet's order along the graph, one output each."""
    layer_map = map_layers(graph)
    named = [n for names in layer_map.nodes.values() for n in names]
    assert sorted(named) == sorted(n.name for n in graph.graph.node)
    assert all(layer_map.nodes[name] for name in LAYERS)
    assert layer_map.outputs["fc8"] == graph.graph.output[0].name
    order = [LAYERS.index(layer_map.layer_of(n.name)) for n in graph.graph.node
             if not all(i in {t.name for t in graph.graph.initializer} for i in n.input)]
    assert order == sorted(order), "a node of an earlier layer runs after a later layer's"
    for name in LAYERS[:-1]:  # the output crosses to the next layer
        consumers = [n for n in graph.graph.node if layer_map.outputs[name] in n.input]
        assert consumers and all(LAYERS.index(layer_map.layer_of(c.name)) > LAYERS.index(name) for c in consumers)


FORMS = [f"{p}-{lrn}" for p in ("fp32", "fp16", "int8") for lrn in ("conv", "native")]


@pytest.mark.parametrize("form", FORMS)
def test_every_node_belongs_to_one_layer(graphs, form):
    _check_map(graphs[form])


def test_the_lrn_and_its_casts_are_named_by_their_layer(graphs):
    conv, half = map_layers(graphs["fp32-conv"]), map_layers(graphs["fp16-native"])
    assert {n.split(".")[0] for n in conv.nodes["lrn1"]} == {"lrn1"} and len(conv.nodes["lrn1"]) == 6
    assert map_layers(graphs["fp32-native"]).nodes["lrn2"] == ("lrn2",)
    # fp16: conv1's output is cast to fp32 for the LRN island and back to fp16 for pool1
    assert half.outputs["conv1"] == "relu.fp32" and half.aliases["conv1"] == ("relu",)
    assert half.outputs["lrn1"] == "lrn.fp16" and half.layer_of("input.fp16.cast") == "conv1"
    assert conv.layer_of("features.conv3.weight") is None and conv.layer_of("relu_2") == "conv3"


@pytest.mark.parametrize("form", ["fp32-native", "int8-conv", pytest.param("fp32-conv", marks=pytest.mark.slow),
                                  pytest.param("fp16-native", marks=pytest.mark.slow)])
def test_layer_outputs_are_what_the_pytorch_layers_output(graphs, model, form):
    """The probed graph, run by ONNX Runtime, gives each layer's tensor: it must equal the output of that layer's
    PyTorch module (fp32 to 1e-5 relative; fp16 to 1e-2; int8 on noise it was calibrated on, 0.3), and its logits
    must not move (fp32, int8: not at all; fp16: ONNX Runtime fuses the casts differently once they are graph
    outputs, within fp16's rounding)."""
    graph = graphs[form]
    layer_map = map_layers(graph)
    probed = with_layer_outputs(graph, layer_map)
    session = ort.InferenceSession(probed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((2, 3, 227, 227), dtype=np.float32)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))
    plain = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = plain.run(None, {"input": x})[0]
    np.testing.assert_allclose(got["logits"], logits, rtol=0, atol=1e-2 if form.startswith("fp16") else 0)
    seen, modules = {}, dict(model.named_modules())
    hooks = [modules[TORCH_OUTPUT[name]].register_forward_hook(
        lambda m, a, out, name=name: seen.__setitem__(name, out.detach().clone())) for name in LAYERS]
    with torch.inference_mode():
        model(torch.from_numpy(x))
    for hook in hooks:
        hook.remove()
    bound = {"fp32": 1e-5, "fp16": 1e-2, "int8": 0.3}[form.split("-")[0]]
    for name in LAYERS:
        ref = seen[name].numpy().astype(np.float64)
        value = got[layer_map.outputs[name]].astype(np.float64).reshape(ref.shape)
        assert np.linalg.norm(value - ref) <= bound * np.linalg.norm(ref), name


def test_int8_outputs_are_read_after_their_qdq_pair(graphs):
    layer_map = map_layers(graphs["int8-conv"])
    assert layer_map.outputs["conv3"] == "relu_2_DequantizeLinear_Output"  # what conv4 reads
    assert layer_map.aliases["conv3"] == ("relu_2",)
    assert layer_map.layer_of("features.conv3.weight_DequantizeLinear") == "conv3"
    assert layer_map.layer_of("input_QuantizeLinear") == "conv1"
    assert layer_map.layer_of("lrn1.band_DequantizeLinear") == "lrn1" and layer_map.layer_of("lrn1.add_k") == "lrn1"
    assert layer_map.outputs["pool1"] == "max_pool2d_DequantizeLinear_Output"


def test_torch_layer_spans_name_trainer_modules(model):
    modules = dict(model.named_modules())
    assert all(TORCH_OUTPUT[n] in modules and TORCH_FIRST[n] in modules for n in LAYERS)


def test_fp16_outputs_keep_their_type(graphs):
    graph = graphs["fp16-native"]
    probed = with_layer_outputs(graph, map_layers(graph), ["conv3", "lrn1"])
    types = {o.name: o.type.tensor_type.elem_type for o in probed.graph.output}
    assert types == {"logits": onnx.TensorProto.FLOAT, "relu_2": onnx.TensorProto.FLOAT16,
                     "lrn.fp16": onnx.TensorProto.FLOAT16}
    assert len(graph.graph.output) == 1  # the original is untouched


def test_a_graph_that_is_not_alexnet_is_refused(tiny_onnx):
    with pytest.raises(LayerMapError, match="not an AlexNet graph"):
        map_layers(onnx.load(str(tiny_onnx.path)))


def test_a_missing_layer_is_named(graphs):
    graph = copy.deepcopy(graphs["fp32-native"])
    for init in graph.graph.initializer:
        if init.name == "features.conv4.weight":
            init.name = "renamed.weight"
    for node in graph.graph.node:
        node.input[:] = ["renamed.weight" if i == "features.conv4.weight" else i for i in node.input]
    with pytest.raises(LayerMapError, match="no conv4"):
        map_layers(graph)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("lrn", ["conv", "native"])
def test_exporters_files_map_in_every_precision_and_form(exported, precision, lrn):
    """The real exporter's files (slow: fixture `exported`): int8 adds Q/DQ pairs, weight DequantizeLinears, the LRN
    window sum's own Q/DQ and (conv form) its Add of k; each still maps, and probing moves the logits by less than
    the precision's own rounding."""
    path = exported(precision, lrn=lrn).path
    graph = onnx.load(str(path))
    _check_map(graph)
    layer_map = map_layers(graph)
    if precision == "int8":
        assert layer_map.outputs["conv3"] == "relu_2_DequantizeLinear_Output"  # what conv4 reads, after Q/DQ
    x = np.random.default_rng(2).standard_normal((2, 3, 227, 227), dtype=np.float32)
    probed = ort.InferenceSession(with_layer_outputs(graph, layer_map).SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in probed.get_outputs()], probed.run(None, {"input": x})))
    assert set(outputs) == {layer_map.outputs[n] for n in LAYERS}
    # Marked outputs can change which nodes ONNX Runtime fuses: fp32 stays bit-identical; the fp16 casts and the
    # int8 kernels (measured up to 1 % of the largest logit on noise inputs) move by less than their own rounding.
    logits = plain.run(None, {"input": x})[0]
    bound = {"fp32": 0.0, "fp16": 1e-2, "int8": 0.02}[precision] * np.abs(logits).max()
    np.testing.assert_allclose(outputs["logits"], logits, rtol=0, atol=bound)
