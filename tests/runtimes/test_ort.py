"""ONNX Runtime adapters: CPU options, and the CUDA adapter's strict mode and IO binding, checked without a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import UnavailableError
from runtimes.errors import RuntimeLoadError, RuntimeOptionError, RuntimeUnavailableError
from runtimes.ort_cuda_runtime import OrtCudaRuntime, bind_io
from runtimes.ort_cuda_session import cpu_assigned_nodes, create_cuda_session
from runtimes.ort_runtime import OrtRuntime

ort = pytest.importorskip("onnxruntime")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a GPU")


def test_cpu_options_are_explicit(tiny_onnx):
    with OrtRuntime(tiny_onnx.path, threads=1, graph_optimization="basic") as rt:
        info = rt.describe()
        so = rt._session.get_session_options()
        assert (so.intra_op_num_threads, so.inter_op_num_threads) == (1, 1)
        assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert info["providers"] == ["CPUExecutionProvider"] and info["intra_op_threads"] == 1


def test_unknown_optimization_level_lists_the_valid_ones(tiny_onnx):
    with pytest.raises(RuntimeOptionError, match="disable, basic, extended, all"):
        OrtRuntime(tiny_onnx.path, graph_optimization="max")


def test_bad_model_file_is_a_load_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(RuntimeLoadError, match="cannot create a session"):
        OrtRuntime(bad).load()


def test_precision_comes_from_metadata_or_argument(tiny_onnx):
    with OrtRuntime(tiny_onnx.path, precision="fp16") as rt:
        assert rt.precision == "fp16"
    with OrtRuntime(tiny_onnx.path) as rt:  # no metadata
        assert rt.precision == "fp32"


@no_gpu
def test_cuda_unavailable_says_why(tiny_onnx):
    ok, reason = OrtCudaRuntime.is_available()
    assert not ok and "torch.cuda.is_available() is False" in reason
    with pytest.raises(RuntimeUnavailableError, match="no CUDA GPU") as e:
        OrtCudaRuntime(tiny_onnx.path).load()
    assert isinstance(e.value, UnavailableError)  # exit 3, "not available here", not a failure


@no_gpu
@pytest.mark.parametrize("strict", [True, False])
def test_cuda_session_never_falls_back_silently(tiny_onnx, strict):
    # Without a GPU, ORT would quietly build a CPU session; both modes must refuse it.
    with pytest.raises(RuntimeUnavailableError, match="not CUDAExecutionProvider"):
        create_cuda_session(ort, str(tiny_onnx.path), ort.SessionOptions, {"device_id": "0"}, strict=strict)


def test_cuda_provider_options_keep_tf32_off_by_default(tiny_onnx):
    opts = OrtCudaRuntime(tiny_onnx.path).provider_options()
    assert opts["use_tf32"] == "0" and opts["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert "enable_cuda_graph" not in opts
    opts = OrtCudaRuntime(tiny_onnx.path, allow_tf32=True, cuda_graph=True, cudnn_conv_algo_search="HEURISTIC") \
        .provider_options()
    assert (opts["use_tf32"], opts["enable_cuda_graph"], opts["cudnn_conv_algo_search"]) == ("1", "1", "HEURISTIC")
    with pytest.raises(RuntimeOptionError, match="EXHAUSTIVE"):
        OrtCudaRuntime(tiny_onnx.path, cudnn_conv_algo_search="FAST")


def test_cpu_assigned_nodes_are_listed(tiny_onnx):
    so = ort.SessionOptions()
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    session = ort.InferenceSession(str(tiny_onnx.path), so, providers=["CPUExecutionProvider"])
    nodes = cpu_assigned_nodes(session)
    assert nodes and any(n.startswith("Conv ") for n in nodes)


def test_io_binding_runs_on_bound_buffers(tiny_onnx):
    # The same binding code the CUDA adapter uses, bound to CPU torch tensors.
    x = tiny_onnx.case.sample(3)
    with OrtRuntime(tiny_onnx.path) as rt:
        expected = rt.infer({"input": x})["logits"]
        binding = bind_io(rt, {"input": x}, "cpu", 0, torch.device("cpu"))
        assert binding.outputs["logits"].shape == (3, 5)  # resolved from the symbolic "batch"
        binding.inputs["input"].copy_(torch.from_numpy(x))
        rt._session.run_with_iobinding(binding.io, binding.run_options)
        np.testing.assert_allclose(binding.fetch()["logits"], expected, rtol=1e-6, atol=1e-6)
