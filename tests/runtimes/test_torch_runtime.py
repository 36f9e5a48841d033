"""The PyTorch reference runtime: model sources (module, factory, checkpoint), device errors, torch.compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtimes.errors import RuntimeUnavailableError
from runtimes.torch_runtime import TorchRuntime


def test_checkpoint_source(alexnet_run):
    x = np.random.default_rng(0).standard_normal((2, 3, 227, 227), dtype=np.float32)
    with TorchRuntime(alexnet_run.run_dir) as rt:  # a run folder resolves to its model.safetensors
        out = rt.infer({"input": x})["logits"]
        assert rt.describe()["checkpoint"] == str(alexnet_run.weights)
    with torch.inference_mode():
        np.testing.assert_allclose(out, alexnet_run.model(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-6)


def test_factory_and_module_sources_agree(tiny_onnx):
    x = tiny_onnx.case.sample(3)
    with TorchRuntime(tiny_onnx.case.build, input_shape=(3, 16, 16)) as a, \
            TorchRuntime(tiny_onnx.case.build(), input_shape=(3, 16, 16)) as b:
        np.testing.assert_array_equal(a.infer({"input": x})["logits"], b.infer({"input": x})["logits"])
        assert a.precision == "fp32" and a.device == "cpu"


def test_not_a_module_is_rejected():
    with pytest.raises(TypeError, match="expected an nn.Module"):
        TorchRuntime(lambda: "model").load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_cuda_without_gpu_is_unavailable(tiny_onnx):
    with pytest.raises(RuntimeUnavailableError, match="no CUDA GPU"):
        TorchRuntime(tiny_onnx.case.build(), device="cuda").load()


@pytest.mark.slow
def test_compiled_model_matches_eager(tiny_onnx):
    x = tiny_onnx.case.sample(2)
    with TorchRuntime(tiny_onnx.case.build(), input_shape=(3, 16, 16)) as eager, \
            TorchRuntime(tiny_onnx.case.build(), input_shape=(3, 16, 16), compile=True) as compiled:
        np.testing.assert_allclose(compiled.infer({"input": x})["logits"], eager.infer({"input": x})["logits"],
                                   rtol=1e-5, atol=1e-6)
        assert compiled.describe()["compile"] is True
