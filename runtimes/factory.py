"""Adapters built from the bench's options: the runtimes under test and the parity reference."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from runtimes.base import Runtime
from runtimes.errors import BenchError
from runtimes.onnx_info import OnnxInfo
from runtimes.registry import RUNTIME_NAMES


@dataclass(frozen=True)
class RuntimeOptions:
    """Adapter settings the bench exposes; each maps onto one adapter option."""
    threads: int | None = None             # CPU threads for torch and ONNX Runtime (None = the usable cores)
    graph_optimization: str = "all"        # ONNX Runtime graph optimisation level
    device: str = "auto"                   # torch runtime and reference: auto, cpu, cuda, cuda:N
    compile: bool = False                  # torch.compile the benchmarked torch runtime (the reference stays eager)
    allow_tf32: bool = False               # TF32 on GPU runtimes; the parity reference never uses it
    cudnn_algo_search: str = "EXHAUSTIVE"  # onnxruntime-cuda
    cuda_graph: bool = False               # onnxruntime-cuda: capture/replay CUDA graphs
    strict: bool = True                    # onnxruntime-cuda: fail rather than run any node on the CPU EP
    engine_cache: str | None = None        # tensorrt engine cache folder
    workspace_mb: int = 1024               # tensorrt builder workspace
    opt_batch: int | None = None           # tensorrt profile opt (default: the largest batch size)


def make_runtime(name: str, onnx_path, info: OnnxInfo, source, opts: RuntimeOptions,
                 batch_sizes: Sequence[int]) -> Runtime:
    """Build the adapter ``name`` with the bench's options."""
    if name == "torch":
        from runtimes.torch_runtime import TorchRuntime

        return TorchRuntime(source, device=opts.device, compile=opts.compile, allow_tf32=opts.allow_tf32,
                            **torch_io(info))
    if name == "onnxruntime":
        from runtimes.ort_runtime import OrtRuntime

        return OrtRuntime(onnx_path, threads=opts.threads, graph_optimization=opts.graph_optimization,
                          precision=info.precision)
    if name == "onnxruntime-cuda":
        from runtimes.ort_cuda_runtime import OrtCudaRuntime

        return OrtCudaRuntime(onnx_path, cudnn_conv_algo_search=opts.cudnn_algo_search, allow_tf32=opts.allow_tf32,
                              cuda_graph=opts.cuda_graph, strict=opts.strict, threads=opts.threads,
                              graph_optimization=opts.graph_optimization, precision=info.precision)
    if name == "tensorrt":
        from runtimes.trt_runtime import TensorRTRuntime

        return TensorRTRuntime(onnx_path, cache_dir=opts.engine_cache, batch_sizes=batch_sizes,
                               opt_batch=opts.opt_batch, workspace_bytes=opts.workspace_mb << 20,
                               allow_tf32=opts.allow_tf32, precision=info.precision)
    raise BenchError(f"unknown runtime {name!r}; expected one of {', '.join(RUNTIME_NAMES)}")


def reference_runtime(source, info: OnnxInfo, opts: RuntimeOptions) -> Runtime:
    """Eager PyTorch with TF32 off (or ONNX Runtime CPU when there is no checkpoint)."""
    if source is not None:
        from runtimes.torch_runtime import TorchRuntime

        return TorchRuntime(source, device=opts.device, **torch_io(info))
    from runtimes.ort_runtime import OrtRuntime

    return OrtRuntime(info.path, threads=opts.threads, precision=info.precision)


def torch_io(info: OnnxInfo) -> dict[str, Any]:
    return {"input_name": info.inputs[0].name, "output_name": info.outputs[0].name,
            "input_shape": info.inputs[0].shape[1:]}
