"""ONNX Runtime on the CUDA execution provider: no silent CPU fallback, IO binding to device buffers, TF32 off."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtimes.errors import InferenceError, RuntimeLoadError, RuntimeOptionError, RuntimeUnavailableError
from runtimes.ort_cuda_session import create_cuda_session, cuda_prerequisites, probe_cuda
from runtimes.ort_runtime import OrtRuntime

ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


class OrtCudaRuntime(OrtRuntime):
    """ONNX Runtime, CUDA execution provider only.

    Args:
        path: The ONNX file.
        device_id: CUDA device.
        cudnn_conv_algo_search: ``EXHAUSTIVE`` (slow first run, fastest kernels), ``HEURISTIC`` or ``DEFAULT``.
        allow_tf32: TF32 convolutions/matmuls. Off by default so fp32 parity holds.
        cuda_graph: Capture and replay a CUDA graph per input shape (needs fixed, bound buffers: done here).
        strict: Create the session with CPU fallback disabled; a graph node that would run on the CPU fails the load
            and the error lists those nodes. ``strict=False`` allows them, lists them in ``describe()``, and still
            refuses a session whose first provider is not CUDA.
    """
    name = "onnxruntime-cuda"
    provider = "CUDAExecutionProvider"

    def __init__(self, path: str | os.PathLike, *, device_id: int = 0, cudnn_conv_algo_search: str = "EXHAUSTIVE",
                 allow_tf32: bool = False, cuda_graph: bool = False, strict: bool = True, threads: int | None = None,
                 graph_optimization: str = "all", precision: str | None = None) -> None:
        super().__init__(path, threads=threads, graph_optimization=graph_optimization, precision=precision)
        if cudnn_conv_algo_search not in ALGO_SEARCH:
            raise RuntimeOptionError(f"cudnn_conv_algo_search {cudnn_conv_algo_search!r}; expected one of "
                                     f"{', '.join(ALGO_SEARCH)}")
        self.device = "cuda"
        self._device_id, self._algo, self._tf32 = device_id, cudnn_conv_algo_search, allow_tf32
        self._cuda_graph, self._strict = cuda_graph, strict
        self._bindings: dict[tuple, _Binding] = {}
        self.cpu_nodes: list[str] = []

    @classmethod
    def create(cls, model: str | os.PathLike, options: Any, batch_sizes: tuple[int, ...] = (),
               io: Any = None) -> "OrtCudaRuntime":
        return cls(model, cudnn_conv_algo_search=options.cudnn_algo_search, allow_tf32=options.allow_tf32,
                   cuda_graph=options.cuda_graph, strict=options.strict, threads=options.threads,
                   graph_optimization=options.graph_optimization)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        return probe_cuda()

    def provider_options(self) -> dict[str, str]:
        opts = {"device_id": str(self._device_id), "cudnn_conv_algo_search": self._algo,
                "use_tf32": "1" if self._tf32 else "0", "cudnn_conv_use_max_workspace": "1"}
        if self._cuda_graph:
            opts["enable_cuda_graph"] = "1"
        if self.stream is not None:  # ORT enqueues on our stream, so CUDA events recorded there bracket its work
            opts.update(has_user_compute_stream="1", user_compute_stream=str(self.stream.cuda_stream))
        return opts

    def _load(self) -> None:
        ok, reason = cuda_prerequisites()
        if not ok:
            raise RuntimeUnavailableError(f"{self.name}: {reason}")
        import onnxruntime as ort
        import torch

        self._torch_device = torch.device("cuda", self._device_id)
        self.stream = torch.cuda.Stream(device=self._torch_device)
        self._session, self.cpu_nodes = create_cuda_session(
            ort, str(self.path), lambda: self.session_options(ort), self.provider_options(), strict=self._strict)
        self._read_io()

    def _close(self) -> None:
        self._bindings.clear()
        self._binding = None
        super()._close()

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        import torch

        key = tuple((n, a.shape) for n, a in feeds.items())
        if key not in self._bindings:
            self._bindings[key] = bind_io(self, feeds, "cuda", self._device_id, self._torch_device,
                                          graph_id=len(self._bindings) if self._cuda_graph else None)
        binding = self._binding = self._bindings[key]
        with self._stream_context():
            for name, array in feeds.items():
                binding.inputs[name].copy_(torch.from_numpy(array))
        self.stream.synchronize()

    def _run(self) -> None:
        try:
            self._session.run_with_iobinding(self._binding.io, self._binding.run_options)
        except self._errors as e:
            raise InferenceError(f"{self.name}: inference failed: {e}") from None

    def _fetch(self) -> dict[str, np.ndarray]:
        return self._binding.fetch()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        opts = {k: v for k, v in self.provider_options().items() if k != "user_compute_stream"}
        info.update(provider_options=opts, strict=self._strict, cuda_graph=self._cuda_graph, allow_tf32=self._tf32,
                    cpu_nodes=len(self.cpu_nodes), io_binding=True)
        return info


@dataclass
class _Binding:
    """An IO binding whose buffers live as long as it does (CUDA graphs replay on the same addresses)."""
    io: Any
    inputs: dict[str, Any]            # torch tensors bound as inputs
    outputs: dict[str, Any]           # torch tensors, or None where ORT allocates the output
    run_options: Any

    def fetch(self) -> dict[str, np.ndarray]:
        allocated = iter(self.io.copy_outputs_to_cpu()) if None in self.outputs.values() else None
        result = {}
        for name, tensor in self.outputs.items():
            result[name] = tensor.to("cpu").numpy().copy() if tensor is not None else next(allocated)
        return result


def bind_io(rt: OrtRuntime, feeds: dict[str, np.ndarray], device_type: str, device_id: int, torch_device,
            graph_id: int | None = None) -> _Binding:
    """Allocate torch buffers for ``feeds``' shapes and bind them; outputs whose shape follows from the inputs'
    symbolic dims (``batch``) get buffers too, others are left for ORT to allocate."""
    import onnxruntime as ort
    import torch

    io = rt._session.io_binding()
    sizes: dict[str, int] = {}
    inputs = {}
    for spec, dim_names in zip(rt._inputs, rt._input_dim_names):
        array = feeds[spec.name]
        t = torch.empty(array.shape, dtype=torch.from_numpy(array[:0]).dtype, device=torch_device)
        io.bind_input(spec.name, device_type, device_id, array.dtype.type, tuple(array.shape), t.data_ptr())
        inputs[spec.name] = t
        sizes.update({n: s for n, s in zip(dim_names, array.shape) if n})
    outputs: dict[str, Any] = {}
    for name, dims, dtype in zip(rt._outputs, rt._output_dims, rt._output_types):
        shape = tuple(d if isinstance(d, int) else sizes.get(d) for d in dims)
        if None in shape or dtype not in ("float32", "float16", "int64", "int32"):
            if graph_id is not None:
                raise RuntimeLoadError(f"{rt.name}: CUDA graphs need fixed output buffers, but output {name!r} has "
                                       f"shape {dims} that the inputs do not determine")
            io.bind_output(name, device_type, device_id)
            outputs[name] = None
            continue
        t = torch.empty(shape, dtype=getattr(torch, dtype), device=torch_device)
        io.bind_output(name, device_type, device_id, np.dtype(dtype).type, shape, t.data_ptr())
        outputs[name] = t
    run_options = ort.RunOptions()
    if graph_id is not None:
        run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
    return _Binding(io, inputs, outputs, run_options)
