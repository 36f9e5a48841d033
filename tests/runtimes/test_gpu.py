"""The short device suite (`pytest -m gpu`): ORT CUDA strictness, IO binding and CUDA graphs, TensorRT engines and
their cache, device timing, fp32 parity with PyTorch-CUDA (TF32 off). Skips with a reason on machines without a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtimes.parity import compare_outputs
from export.spec import tolerance_for
from deploy.bench.timing import BenchConfig, measure
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


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory):
    """One engine cache for the session (never ~/.cache): an engine is built once and reused by later tests."""
    return tmp_path_factory.mktemp("engines")


def tensorrt(path, cache_dir, **kwargs):
    """TensorRT at builder optimisation level 1: tests check behaviour, not speed, and build ~4x faster."""
    from runtimes.trt_runtime import TensorRTRuntime

    ok, reason = TensorRTRuntime.is_available()
    if not ok:
        pytest.skip(f"tensorrt unavailable: {reason}")
    return TensorRTRuntime(path, cache_dir=cache_dir, optimization_level=kwargs.pop("optimization_level", 1),
                           **kwargs)


def torch_reference(alexnet_run):
    from trainer.checkpoint import load_checkpoint

    return TorchRuntime(lambda: load_checkpoint(alexnet_run.weights).build_model(), device="cuda")


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


def test_tensorrt_engine_cache_and_profiles(tiny_onnx, tmp_path):
    x4 = tiny_onnx.case.sample(4)
    with tensorrt(tiny_onnx.path, tmp_path, batch_sizes=(1, 4), max_batch=8) as first:
        assert first.details["engine_source"] == "built"
        assert [p["max"] for p in first.details["profiles"]] == [8, 1, 4]  # general, then one per batch size
        out = first.infer({"input": x4})["logits"]
        first.infer({"input": tiny_onnx.case.sample(3)})  # a size without a profile of its own: the general one
        with pytest.raises(InputMismatchError, match="outside the engine's profiles"):
            first.infer({"input": tiny_onnx.case.sample(9)})
    with tensorrt(tiny_onnx.path, tmp_path, batch_sizes=(1, 4), max_batch=8) as again:
        assert again.details["engine_source"] == "cache"
        # Another process's run of the same engine: tactics with atomics are not bit-repeatable, parity is.
        np.testing.assert_allclose(again.infer({"input": x4})["logits"], out, rtol=1e-4, atol=1e-5)
    with tensorrt(tiny_onnx.path, tmp_path, batch_sizes=(1, 4), max_batch=8, allow_tf32=True) as other:
        assert other.details["engine_source"] == "built"  # different flags: a different engine, never the cached one
    assert len(list(tmp_path.glob("timing-*.cache"))) == 1  # one timing cache per TensorRT version and GPU model


def test_tensorrt_alexnet_fp32_parity_and_device_time(alexnet_run, engine_cache):
    x = np.random.default_rng(1).standard_normal((8, 3, 227, 227), dtype=np.float32)
    with tensorrt(alexnet_run.onnx_path, engine_cache, batch_sizes=(1, 8)) as rt, \
            torch_reference(alexnet_run) as ref:
        assert_fp32_parity(ref, rt, x)
        m = measure(rt, {"input": x[:1]}, BenchConfig(warmup_iters=10, iterations=50))
        assert m.device_ms and min(m.device_ms) > 0


def test_bench_on_gpu(alexnet_run, engine_cache):
    from deploy.bench.bench import BenchPlan, run_bench
    from runtimes.options import RuntimeOptions

    config = BenchPlan(runtimes=("torch", "onnxruntime-cuda", "tensorrt"), batch_sizes=(1, 8),
                       timing=BenchConfig(warmup_iters=3, iterations=10), parity_samples=8,
                       options=RuntimeOptions(strict=False, engine_cache=str(engine_cache), optimization_level=1))
    report = run_bench(alexnet_run.onnx_path, config)
    assert report.reference["device"] == "cuda" and not report.errors, report.errors
    for r in report.results:
        assert (r.device_latency_ms is not None) == (r.device == "cuda")
    assert report.parity_passed, report.failures()
