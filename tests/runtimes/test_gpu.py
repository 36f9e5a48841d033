"""The short device suite (`pytest -m gpu`): ORT CUDA strictness, IO binding and CUDA graphs, TensorRT engines and
their cache, device timing, fp32 parity with PyTorch-CUDA (TF32 off). Skips with a reason on machines without a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from export.parity import compare_outputs
from export.spec import tolerance_for
from runtimes.bench import BenchConfig, measure
from runtimes.errors import InputMismatchError, RuntimeLoadError
from runtimes.torch_runtime import TorchRuntime

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                 reason="no CUDA GPU (torch.cuda.is_available() is False)")]


def ort_cuda(path, **kwargs):
    from runtimes.ort_cuda_runtime import OrtCudaRuntime

    ok, reason = OrtCudaRuntime.is_available()
    if not ok:
        pytest.skip(f"onnxruntime-cuda unavailable: {reason}")
    return OrtCudaRuntime(path, **kwargs)


def tensorrt(path, tmp_path, **kwargs):
    from runtimes.trt_runtime import TensorRTRuntime

    ok, reason = TensorRTRuntime.is_available()
    if not ok:
        pytest.skip(f"tensorrt unavailable: {reason}")
    return TensorRTRuntime(path, cache_dir=tmp_path / "engines", **kwargs)


def torch_reference(alexnet_run):
    return TorchRuntime(alexnet_run.weights, device="cuda")


def assert_fp32_parity(reference, candidate, x):
    report = compare_outputs(reference.infer({"input": x}), candidate.infer({"input": x}), tolerance_for("fp32"),
                             reference_name=reference.name, candidate_name=candidate.name)
    assert report.passed, str(report) + "".join(f"\n  {f}" for o in report.outputs for f in o.failures)


def test_torch_cuda_turns_tf32_off_and_restores_it(alexnet_run):
    before = torch.backends.cudnn.allow_tf32
    with torch_reference(alexnet_run) as rt:
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert rt.device == "cuda" and rt.stream is not None
    assert torch.backends.cudnn.allow_tf32 == before


def test_ort_cuda_strict_session_is_cuda_only(tiny_onnx):
    with ort_cuda(tiny_onnx.path) as rt:
        assert rt.describe()["providers"][0] == "CUDAExecutionProvider" and rt.cpu_nodes == []


def test_ort_cuda_alexnet_fp32_parity(alexnet_run):
    x = np.random.default_rng(0).standard_normal((8, 3, 227, 227), dtype=np.float32)
    try:
        rt = ort_cuda(alexnet_run.onnx_path)
        rt.load()
    except RuntimeLoadError as e:  # strict mode refused CPU-placed nodes: it must list them, then allow them
        assert "node(s) would run on the CPU execution provider" in str(e)
        rt = ort_cuda(alexnet_run.onnx_path, strict=False)
        rt.load()
        assert rt.cpu_nodes
    with rt, torch_reference(alexnet_run) as ref:
        assert_fp32_parity(ref, rt, x)


def test_ort_cuda_device_timing_and_cuda_graph(tiny_onnx):
    x1, x4 = tiny_onnx.case.sample(1), tiny_onnx.case.sample(4)
    with ort_cuda(tiny_onnx.path) as plain, ort_cuda(tiny_onnx.path, cuda_graph=True) as graph:
        m = measure(plain, {"input": x4}, BenchConfig(warmup_iters=3, iterations=20))
        assert m.device_ms is not None and len(m.device_ms) == 20
        assert all(0 < d <= h * 1.05 + 0.05 for d, h in zip(m.device_ms, m.host_ms))
        for x in (x1, x4, x1):  # one captured graph per shape; replays must match eager runs
            for _ in range(3):
                out = graph.infer({"input": x})["logits"]
            np.testing.assert_allclose(out, plain.infer({"input": x})["logits"], rtol=1e-5, atol=1e-5)


def test_tensorrt_engine_cache(tiny_onnx, tmp_path):
    with tensorrt(tiny_onnx.path, tmp_path, batch_sizes=(1, 4), max_batch=8) as first:
        assert first.details["engine_source"] == "built"
        out = first.infer({"input": tiny_onnx.case.sample(4)})["logits"]
        with pytest.raises(InputMismatchError, match="outside the engine's profile 1..8"):
            first.infer({"input": tiny_onnx.case.sample(9)})
    with tensorrt(tiny_onnx.path, tmp_path, batch_sizes=(1, 4), max_batch=8) as again:
        assert again.details["engine_source"] == "cache"
        np.testing.assert_allclose(again.infer({"input": tiny_onnx.case.sample(4)})["logits"], out, rtol=1e-6)
    with tensorrt(tiny_onnx.path, tmp_path, batch_sizes=(1, 4), max_batch=8, allow_tf32=True) as other:
        assert other.details["engine_source"] == "built"  # different flags: a different engine, never the cached one


def test_tensorrt_alexnet_fp32_parity_and_device_time(alexnet_run, tmp_path):
    x = np.random.default_rng(1).standard_normal((8, 3, 227, 227), dtype=np.float32)
    with tensorrt(alexnet_run.onnx_path, tmp_path, batch_sizes=(1, 8)) as rt, torch_reference(alexnet_run) as ref:
        assert_fp32_parity(ref, rt, x)
        m = measure(rt, {"input": x[:1]}, BenchConfig(warmup_iters=10, iterations=50))
        assert m.device_ms and min(m.device_ms) > 0


def test_bench_all_on_gpu(alexnet_run):
    from runtimes.suite import RuntimeOptions, SuiteConfig, run_bench

    config = SuiteConfig(batch_sizes=(1, 8), bench=BenchConfig(warmup_iters=3, iterations=10), parity_samples=8,
                         options=RuntimeOptions(strict=False))
    report = run_bench(alexnet_run.onnx_path, config)
    assert report.reference["device"] == "cuda" and not report.errors, report.errors
    for r in report.results:
        assert (r.device_latency_ms is not None) == (r.device == "cuda")
    assert report.parity_passed, report.failures()
