"""The PyTorch runtime: model sources (module, factory), bf16, device errors, torch.compile."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtimes.errors import RuntimeLoadError, RuntimeUnavailableError
from runtimes.torch_runtime import TorchRuntime


def test_bf16_computes_in_bf16_close_to_fp32(tiny_onnx):
    ok, reason = TorchRuntime.supports("bf16")
    if not ok:
        pytest.skip(reason)
    x = tiny_onnx.case.sample(4)
    with TorchRuntime(tiny_onnx.case.build(), input_shape=(3, 16, 16)) as fp32, \
            TorchRuntime(tiny_onnx.case.build(), input_shape=(3, 16, 16), bf16=True) as bf16:
        reference, low = fp32.infer({"input": x})["logits"], bf16.infer({"input": x})["logits"]
        assert bf16.precision == "bf16" and bf16.input_specs()[0].dtype == "float32" and low.dtype == np.float32
    assert not np.array_equal(low, reference)  # really bf16 arithmetic, not the fp32 model again
    np.testing.assert_allclose(low, reference, atol=0.05, rtol=0.05)


def test_a_shared_module_stays_fp32_beside_its_bf16_runtime(tiny_onnx):
    ok, reason = TorchRuntime.supports("bf16")
    if not ok:
        pytest.skip(reason)
    shared = tiny_onnx.case.build()
    x = tiny_onnx.case.sample(2)
    with TorchRuntime(lambda: shared, input_shape=(3, 16, 16)) as fp32, \
            TorchRuntime(lambda: shared, input_shape=(3, 16, 16), bf16=True):
        assert next(shared.parameters()).dtype == torch.float32 and fp32.precision == "fp32"
        np.testing.assert_array_equal(fp32.infer({"input": x})["logits"],
                                      shared.eval()(torch.from_numpy(x)).detach().numpy())


def test_factory_and_module_sources_agree(tiny_onnx):
    x = tiny_onnx.case.sample(3)
    with TorchRuntime(tiny_onnx.case.build, input_shape=(3, 16, 16)) as a, \
            TorchRuntime(tiny_onnx.case.build(), input_shape=(3, 16, 16)) as b:
        np.testing.assert_array_equal(a.infer({"input": x})["logits"], b.infer({"input": x})["logits"])
        assert a.precision == "fp32" and a.device == "cpu"


def test_not_a_module_is_rejected():
    with pytest.raises(RuntimeLoadError, match="expected an nn.Module"):
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
