"""RuntimeOptions: every adapter setting the toolkit exposes; each adapter's ``create`` takes the ones it uses."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeOptions:
    """Adapter settings (one CLI flag each); an adapter ignores the ones that do not concern it."""
    threads: int | None = None             # CPU threads (None = the cores this process may use)
    device: str = "auto"                   # torch: auto, cpu, cuda, cuda:N; openvino: CPU (default for auto), GPU, NPU
    precision: str | None = None           # arithmetic: None = the graph's own; "bf16" = an fp32 graph run in bf16
    graph_optimization: str = "all"        # ONNX Runtime graph optimisation level
    compile: bool = False                  # torch.compile the torch runtime (a parity reference stays eager)
    allow_tf32: bool = False               # TF32 on GPU runtimes; fp32 parity may then miss
    cudnn_algo_search: str = "EXHAUSTIVE"  # onnxruntime-cuda
    cuda_graph: bool = False               # onnxruntime-cuda: capture/replay CUDA graphs
    strict: bool = True                    # onnxruntime-cuda: fail rather than run any node on the CPU EP
    engine_cache: str | None = None        # tensorrt engine cache folder
    workspace_mb: int = 1024               # tensorrt builder workspace
    optimization_level: int | None = None  # tensorrt builder_optimization_level 0-5 (None = TensorRT's 3)
