"""TensorRT 11: a strongly typed engine built from the ONNX file, cached with a manifest, run with execute_async_v3."""
from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.contract import MAX_BATCH, TensorSpec
from core.fileio import write_bytes_atomic
from core.paths import default_cache_dir
from runtimes.base import Runtime
from runtimes.errors import InferenceError, InputMismatchError, RuntimeLoadError, RuntimeUnavailableError
from runtimes.trt_engine import (batch_profiles, engine_manifest, format_parser_errors, lookup_engine, profile_for,
                                 store_engine, timing_cache_path)

log = logging.getLogger(__name__)
INSTALL_HINT = ("install the tensorrt extra from NVIDIA's index: "
                "pip install --extra-index-url https://pypi.nvidia.com 'alexnet-deploy[tensorrt]'")


def default_engine_cache() -> Path:
    return default_cache_dir() / "trt-engines"


@functools.cache
def _logger():
    """The process's one trt.Logger: TensorRT keeps a single global logger, and a second live instance warns and
    can be left dangling when its adapter is collected."""
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class TensorRTRuntime(Runtime):
    """TensorRT 11 (name-based I/O tensors, strongly typed networks: precision comes from the ONNX graph).

    Args:
        path: The ONNX file.
        cache_dir: Engine cache (default ``~/.cache/alexnet-deploy/trt-engines``); entries are keyed by the ONNX
            sha256, TensorRT version, GPU name and compute capability, profiles and flags, with a JSON manifest.
        batch_sizes: Batch sizes that will be run: each gets an optimisation profile of its own, selected when that
            size runs, plus a general profile for any other size up to ``max_batch``.
        max_batch: The general profile's largest batch (dynamic-batch graphs).
        workspace_bytes: Builder workspace limit.
        allow_tf32: Let fp32 layers use TF32. Off by default so fp32 parity holds.
        optimization_level: ``builder_optimization_level`` 0–5 (None = TensorRT's default, 3).
    """
    name = "tensorrt"
    preferred_lrn = "native"  # TensorRT has an LRN layer; the conv form would cost a 1x1 conv per LRN

    def __init__(self, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                 batch_sizes: Sequence[int] = (), max_batch: int = MAX_BATCH, workspace_bytes: int = 1 << 30,
                 allow_tf32: bool = False, optimization_level: int | None = None, device_id: int = 0) -> None:
        super().__init__()
        self.device, self.path = "cuda", Path(path)
        self._cache_dir, self._batch_sizes, self._max_batch = cache_dir, tuple(batch_sizes), max_batch
        self._workspace, self._tf32, self._opt_level = workspace_bytes, allow_tf32, optimization_level
        self._device_id = device_id
        self.details: dict[str, Any] = {}

    @classmethod
    def create(cls, model: str | os.PathLike, options: Any, batch_sizes: tuple[int, ...] = (),
               io: Any = None) -> "TensorRTRuntime":
        return cls(model, cache_dir=options.engine_cache, batch_sizes=batch_sizes,
                   workspace_bytes=options.workspace_mb << 20, allow_tf32=options.allow_tf32,
                   optimization_level=options.optimization_level)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        return _probe()

    def _load(self) -> None:
        ok, reason = _probe()
        if not ok:
            raise RuntimeUnavailableError(f"tensorrt: {reason}")
        import tensorrt as trt
        import torch

        from core.onnx_file import model_sha256, read_onnx_info

        self._torch_device = torch.device("cuda", self._device_id)
        torch.cuda.set_device(self._torch_device)  # TensorRT builds and runs on the current device
        info = read_onnx_info(self.path)
        self.precision = info.precision
        self._profiles = batch_profiles(info.inputs[0].shape, self._batch_sizes, self._max_batch)
        props = torch.cuda.get_device_properties(self._torch_device)
        capability = f"{props.major}.{props.minor}"
        flags = {"tf32": self._tf32, "workspace_bytes": self._workspace, "optimization_level": self._opt_level}
        manifest = engine_manifest(model_sha256(self.path, info.external_data), trt.__version__, props.name,
                                   capability, self._profiles, flags)
        cache_dir = Path(self._cache_dir) if self._cache_dir else default_engine_cache()
        start = time.perf_counter()
        engine, source = self._engine_from_cache(trt, cache_dir, manifest)
        if engine is None:
            source = "built"
            plan = self._build(trt, timing_cache_path(cache_dir, trt.__version__, props.name))
            self._plan_path = store_engine(cache_dir, manifest, plan)
            engine = self._trt_runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise RuntimeLoadError("tensorrt: the freshly built engine cannot be deserialized (see the log above)")
        self.details = {"engine_source": source, "engine_path": str(self._plan_path),
                        "tensorrt_version": trt.__version__, "engine_s": round(time.perf_counter() - start, 3),
                        "profiles": [p.to_dict() for p in self._profiles], "gpu": props.name,
                        "compute_capability": capability, **flags}
        self._engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._out_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._inputs = [TensorSpec(n, tuple(d if d >= 0 else None for d in engine.get_tensor_shape(n)),
                                   self._dtypes[n].name) for n in self._in_names]  # checked on every infer
        self._contexts: dict[int, Any] = {}
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self.stream = torch.cuda.Stream(device=self._torch_device)

    def _engine_from_cache(self, trt, cache_dir: Path, manifest: dict[str, Any]):
        self._trt_runtime = trt.Runtime(_logger())
        self._plan_path = lookup_engine(cache_dir, manifest)
        if self._plan_path is None:
            return None, "built"
        engine = self._trt_runtime.deserialize_cuda_engine(self._plan_path.read_bytes())
        if engine is None:  # built by another TensorRT/GPU despite the manifest: never run it, rebuild
            log.warning("tensorrt: cached engine %s cannot be deserialized here; rebuilding", self._plan_path)
        return engine, "cache"

    def _build(self, trt, timing_cache: Path) -> bytes:
        builder = trt.Builder(_logger())
        network = builder.create_network(0)  # strongly typed is the only mode in TensorRT 11
        parser = trt.OnnxParser(network, _logger())
        if not parser.parse_from_file(str(self.path)):  # also finds external data next to the file
            raise RuntimeLoadError(format_parser_errors([parser.get_error(i) for i in range(parser.num_errors)]))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self._workspace)
        if not self._tf32:
            config.clear_flag(trt.BuilderFlag.TF32)
        if self._opt_level is not None:
            config.builder_optimization_level = self._opt_level
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        if any(d < 0 for inp in inputs for d in inp.shape):
            for batch in self._profiles:
                profile = builder.create_optimization_profile()
                for inp in inputs:
                    profile.set_shape(inp.name, *batch.shapes(tuple(inp.shape)[1:]))
                config.add_optimization_profile(profile)
        self._use_timing_cache(config, timing_cache)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeLoadError("tensorrt: engine build failed (the TensorRT log above says why)")
        cache = config.get_timing_cache()
        if cache is not None:  # None when TensorRT dropped it; the next build starts empty, that is all
            write_bytes_atomic(timing_cache, bytes(cache.serialize()))
        return bytes(plan)

    @staticmethod
    def _use_timing_cache(config, path: Path) -> None:
        """Start from the saved timing cache; one that does not match this TensorRT/GPU is replaced by an empty one."""
        blob = path.read_bytes() if path.is_file() else b""
        if not config.set_timing_cache(config.create_timing_cache(blob), False):  # False: refuse a mismatch
            log.warning("tensorrt: timing cache %s does not match this TensorRT/GPU; starting an empty one", path)
            config.set_timing_cache(config.create_timing_cache(b""), False)

    def _close(self) -> None:
        # Device memory goes with the last reference: buffers, contexts (which keep the engine alive) and the stream.
        self._buffers, self._contexts, self._buf, self._ctx = {}, {}, None, None
        self._engine = self._trt_runtime = None

    def _input_specs(self) -> list[TensorSpec]:
        return self._inputs

    def _output_names(self) -> list[str]:
        return list(self._out_names)

    def _context(self, batch: int):
        """The execution context of the profile for ``batch`` (created once, its profile selected once)."""
        index = profile_for(self._profiles, batch)
        if index is None:
            bounds = ", ".join(f"{p.min}..{p.max}" for p in self._profiles)
            raise InputMismatchError(f"tensorrt: batch {batch} is outside the engine's profiles ({bounds})")
        if index not in self._contexts:
            import tensorrt as trt

            # ON_PROFILE_CHANGE: activation memory sized for this context's one profile; the default (STATIC) sizes
            # every context for the largest profile, k profiles' worth of memory for k contexts.
            context = self._engine.create_execution_context(trt.ExecutionContextAllocationStrategy.ON_PROFILE_CHANGE)
            if not context.set_optimization_profile_async(index, self.stream.cuda_stream):
                raise RuntimeLoadError(f"tensorrt: cannot select optimisation profile {index}")
            self.stream.synchronize()
            self._contexts[index] = context
        return self._contexts[index]

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        import torch

        ctx = self._ctx = self._context(feeds[self._in_names[0]].shape[0])
        for name in self._in_names:
            if not ctx.set_input_shape(name, tuple(feeds[name].shape)):
                raise InputMismatchError(f"tensorrt: input {name!r} shape {feeds[name].shape} is outside the engine's "
                                         "profile")
        key = tuple((n, feeds[n].shape) for n in self._in_names)
        if key not in self._buffers:
            shapes = {n: tuple(feeds[n].shape) for n in self._in_names}
            shapes.update({n: tuple(ctx.get_tensor_shape(n)) for n in self._out_names})
            self._buffers[key] = {n: torch.empty(s, dtype=_torch_dtype(self._dtypes[n]), device=self._torch_device)
                                  for n, s in shapes.items()}
        self._buf = self._buffers[key]
        for name, tensor in self._buf.items():
            if not ctx.set_tensor_address(name, tensor.data_ptr()):
                raise InferenceError(f"tensorrt: cannot bind tensor {name!r} (see the TensorRT log above)")
        with self._stream_context():
            for name in self._in_names:
                self._buf[name].copy_(torch.from_numpy(feeds[name]))
        self.stream.synchronize()

    def _run(self) -> None:
        if not self._ctx.execute_async_v3(self.stream.cuda_stream):
            raise InferenceError("tensorrt: execute_async_v3 failed (see the TensorRT log above)")

    def _fetch(self) -> dict[str, np.ndarray]:
        return {n: self._buf[n].to("cpu").numpy().copy() for n in self._out_names}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "model": str(self.path), **self.details}


def _torch_dtype(dtype: np.dtype):
    import torch

    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


@functools.cache
def _probe() -> tuple[bool, str]:
    # torch first: its cu13 wheels load the CUDA libraries TensorRT's then finds already in the process.
    import torch

    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:
        return False, f"TensorRT is not installed ({str(e).splitlines()[0] if str(e) else type(e).__name__}); " \
                      f"{INSTALL_HINT}"
    if int(trt.__version__.split(".")[0]) < 11:
        return False, f"TensorRT {trt.__version__} found, but this adapter uses the TensorRT 11 API; {INSTALL_HINT}"
    if not torch.cuda.is_available():
        return False, ("no CUDA GPU here (torch.cuda.is_available() is False); TensorRT 11 needs an NVIDIA GPU "
                       "(Turing or newer) with an R580+ driver")
    return True, ""
