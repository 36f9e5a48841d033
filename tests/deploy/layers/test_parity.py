"""Layer parity on the exporter's graphs of a small AlexNet, and the first diverging layer of a deliberately broken
export (conv3's weight scaled by 2 in the ONNX file)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy.layers.capture import load_graph, reference_activations
from deploy.layers.parity import first_divergence, layer_parity
from export.layers import LAYERS
from runtimes.options import RuntimeOptions

X = np.random.default_rng(0).standard_normal((4, 3, 227, 227), dtype=np.float32)


def _broken(source, path, layer: str = "conv3", factor: float = 2.0):
    """``source`` with one conv's weight scaled in the ONNX file itself."""
    model = onnx.load(str(source))
    name = f"features.{layer}.weight"
    for init in model.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, name))
    onnx.save(model, str(path))
    return path


def test_a_doubled_conv3_weight_is_named_conv3(small, tmp_path):
    broken = _broken(small.file("fp32-conv"), tmp_path / "broken.onnx")
    found = first_divergence(broken, "onnxruntime", RuntimeOptions(), small.torch_model, X)
    assert found is not None and found.layer == "conv3" and found.previous.layer == "pool2"
    assert found.diff.rel_error > 0.5 and found.previous.rel_error < 1e-5
    assert "first diverging layer: conv3" in str(found) and found.to_dict()["layer"] == "conv3"


def test_an_intact_export_has_no_divergence(small):
    assert first_divergence(small.file("fp32-native"), "openvino", RuntimeOptions(), small.torch_model, X) is None


def test_a_wrong_lrn_constant_is_named_lrn2(small, tmp_path):
    """A subtler bug than a scaled weight: lrn2's alpha without the 1/size (5x too strong) in the native LRN."""
    model = onnx.load(str(small.file("fp32-native")))
    node = next(n for n in model.graph.node if n.name == "lrn2")
    next(a for a in node.attribute if a.name == "alpha").f *= 5
    onnx.save(model, str(tmp_path / "lrn.onnx"))
    found = first_divergence(tmp_path / "lrn.onnx", "onnxruntime", RuntimeOptions(), small.torch_model, X)
    assert found is not None and found.layer == "lrn2"


@pytest.mark.parametrize("form,runtime", [("fp32-native", "openvino"), ("int8-conv", "onnxruntime"),
                                          pytest.param("fp16-conv", "onnxruntime", marks=pytest.mark.slow),
                                          pytest.param("int8-native", "openvino", marks=pytest.mark.slow)])
def test_rows_of_every_precision_are_within_tolerance(small, form, runtime):
    graph = load_graph(small.file(form))
    reference = reference_activations(small.torch_model, graph.info, RuntimeOptions(), X, 4)
    row = layer_parity(runtime, graph, small.torch_model, RuntimeOptions(), X, reference, 4)
    assert row.error is None and row.precision == form.split("-")[0]
    assert [d.layer for d in row.layers] == list(LAYERS) and row.passed, row.to_dict()
    assert row.probe_effect is not None and row.layers[-1].top1_agreement is not None
    if form.startswith("fp32"):
        assert row.probe_effect == 0 and all(d.rel_error < 1e-5 for d in row.layers)


def test_torch_bf16_row_leaves_the_given_model_in_fp32(small):
    import torch

    from core.host import cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    graph = load_graph(small.file("fp32-conv"))
    reference = reference_activations(small.torch_model, graph.info, RuntimeOptions(), X, 4)
    row = layer_parity("torch", graph, small.torch_model, RuntimeOptions(precision="bf16"), X, reference, 4)
    assert row.precision == "bf16" and row.passed and 1e-4 < row.layers[0].rel_error < 5e-2
    assert all(p.dtype == torch.float32 for p in small.model.parameters())
    assert not any(m._forward_hooks for m in small.model.modules())  # hooks went on a copy


def test_a_runtime_that_fails_is_a_row_with_its_reason(small):
    graph = load_graph(small.file("fp32-conv"))
    reference = reference_activations(small.torch_model, graph.info, RuntimeOptions(), X[:2], 2)
    failing = layer_parity("torch", graph, None, RuntimeOptions(), X[:2], reference, 2)
    assert not failing.passed and "PyTorch checkpoint" in failing.error and failing.layers == ()


def test_first_divergence_on_the_real_export(exported, checkpoint, tmp_path):
    """The exporter's fp32 file of a full AlexNet (slow): conv3 scaled by 2 is named on OpenVINO too, on the images
    its metadata names."""
    from deploy.inputs import real_images
    from deploy.models import checkpoint_model
    from core.onnx_file import read_onnx_info

    source = exported("fp32", lrn="native").path
    broken = _broken(source, tmp_path / "broken.onnx")
    images, _ = real_images(read_onnx_info(source).meta, (3, 227, 227), 8)
    x = images if images is not None else X
    for runtime in ("onnxruntime", "openvino"):
        found = first_divergence(broken, runtime, RuntimeOptions(), checkpoint_model(checkpoint), x)
        assert found is not None and found.layer == "conv3", runtime
