"""TensorRT 11: a strongly typed engine built from the ONNX file, cached with a manifest, run with execute_async_v3."""
from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from runtimes.base import Runtime, TensorSpec
from runtimes.errors import InferenceError, InputMismatchError, RuntimeLoadError, RuntimeUnavailableError
from runtimes.trt_engine import (DEFAULT_MAX_BATCH, batch_profile, engine_manifest, format_parser_errors,
                                 lookup_engine, store_engine)

log = logging.getLogger(__name__)
INSTALL_HINT = ("install the tensorrt extra from NVIDIA's index: "
                "pip install --extra-index-url https://pypi.nvidia.com 'alexnet-deploy[tensorrt]'")


def default_engine_cache() -> Path:
    from trainer.synthetic import default_cache_dir

    return default_cache_dir() / "trt-engines"


class TensorRTRuntime(Runtime):
    """TensorRT 11 (name-based I/O tensors, strongly typed networks: precision comes from the ONNX graph).

    Args:
        path: The ONNX file.
        cache_dir: Engine cache (default ``~/.cache/alexnet-deploy/trt-engines``); entries are keyed by the ONNX
            sha256, TensorRT version, GPU name and compute capability, profile and flags, with a JSON manifest.
        batch_sizes: Batch sizes that will be run: the profile covers them (``opt`` = the largest unless given).
        opt_batch, max_batch: Profile overrides for a dynamic batch (min is 1).
        workspace_bytes: Builder workspace limit.
        allow_tf32: Let fp32 layers use TF32. Off by default so fp32 parity holds.
        optimization_level: ``builder_optimization_level`` 0–5 (None = TensorRT's default, 3).
    """
    name = "tensorrt"

    def __init__(self, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                 batch_sizes: Sequence[int] = (), opt_batch: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 workspace_bytes: int = 1 << 30, allow_tf32: bool = False, optimization_level: int | None = None,
                 device_id: int = 0, precision: str | None = None) -> None:
        super().__init__()
        self.device, self.path = "cuda", Path(path)
        self._cache_dir, self._batch_sizes = cache_dir, batch_sizes
        self._opt_batch, self._max_batch = opt_batch, max_batch
        self._workspace, self._tf32, self._opt_level = workspace_bytes, allow_tf32, optimization_level
        self._device_id, self._precision = device_id, precision
        self.details: dict[str, Any] = {}

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        return _probe()

    def _load(self) -> None:
        ok, reason = _probe()
        if not ok:
            raise RuntimeUnavailableError(f"tensorrt: {reason}")
        import tensorrt as trt
        import torch

        from runtimes.onnx_info import model_sha256, read_onnx_info

        self._torch_device = torch.device("cuda", self._device_id)
        torch.cuda.set_device(self._torch_device)  # TensorRT builds and runs on the current device
        info = read_onnx_info(self.path)
        self.precision = self._precision or info.precision
        self._profile = batch_profile(info.inputs[0].shape, self._batch_sizes, self._opt_batch, self._max_batch)
        props = torch.cuda.get_device_properties(self._torch_device)
        capability = f"{props.major}.{props.minor}"
        flags = {"tf32": self._tf32, "workspace_bytes": self._workspace, "optimization_level": self._opt_level}
        manifest = engine_manifest(model_sha256(self.path), trt.__version__, props.name, capability, self._profile,
                                   flags)
        cache_dir = Path(self._cache_dir) if self._cache_dir else default_engine_cache()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._trt_runtime = trt.Runtime(self._logger)
        start = time.perf_counter()
        engine, plan_path, source = None, lookup_engine(cache_dir, manifest), "cache"
        if plan_path is not None:
            engine = self._trt_runtime.deserialize_cuda_engine(plan_path.read_bytes())
            if engine is None:  # built by another TensorRT/GPU despite the manifest: never run it, rebuild
                log.warning("tensorrt: cached engine %s cannot be deserialized here; rebuilding", plan_path)
        if engine is None:
            source = "built"
            plan = self._build(trt, cache_dir / f"timing-{trt.__version__}-sm{capability}.cache")
            plan_path = store_engine(cache_dir, manifest, plan)
            engine = self._trt_runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise RuntimeLoadError("tensorrt: the freshly built engine cannot be deserialized (see the log above)")
        self.details = {"engine_source": source, "engine_path": str(plan_path), "tensorrt_version": trt.__version__,
                        "engine_s": round(time.perf_counter() - start, 3), "profile": self._profile.to_dict(),
                        "gpu": props.name, "compute_capability": capability, **flags}
        self._engine, self._context = engine, engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._in_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._out_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self.stream = torch.cuda.Stream(device=self._torch_device)

    def _build(self, trt, timing_cache: Path) -> bytes:
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)  # strongly typed is the only mode in TensorRT 11
        parser = trt.OnnxParser(network, self._logger)
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
            profile = builder.create_optimization_profile()
            for inp in inputs:
                profile.set_shape(inp.name, *self._profile.shapes(tuple(inp.shape)[1:]))
            config.add_optimization_profile(profile)
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(blob), False)  # False: a mismatching cache is an error
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeLoadError("tensorrt: engine build failed (the TensorRT log above says why)")
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
        return bytes(plan)

    def _close(self) -> None:
        self._buffers = {}
        self._context = self._engine = self._trt_runtime = None

    def _input_specs(self) -> list[TensorSpec]:
        return [TensorSpec(n, tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(n)),
                           self._dtypes[n].name) for n in self._in_names]

    def _output_names(self) -> list[str]:
        return list(self._out_names)

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        import torch

        for name in self._in_names:
            if not self._profile.contains(feeds[name].shape[0]):
                raise InputMismatchError(f"tensorrt: input {name!r} has batch {feeds[name].shape[0]}, outside the "
                                         f"engine's profile {self._profile.min}..{self._profile.max}")
        ctx, key = self._context, tuple((n, feeds[n].shape) for n in self._in_names)
        for name in self._in_names:
            ctx.set_input_shape(name, tuple(feeds[name].shape))
        if key not in self._buffers:
            shapes = {n: tuple(feeds[n].shape) for n in self._in_names}
            shapes.update({n: tuple(ctx.get_tensor_shape(n)) for n in self._out_names})
            self._buffers[key] = {n: torch.empty(s, dtype=_torch_dtype(self._dtypes[n]), device=self._torch_device)
                                  for n, s in shapes.items()}
        self._buf = self._buffers[key]
        for name, tensor in self._buf.items():
            ctx.set_tensor_address(name, tensor.data_ptr())
        with self._stream_context():
            for name in self._in_names:
                self._buf[name].copy_(torch.from_numpy(feeds[name]))
        self.stream.synchronize()

    def _run(self) -> None:
        if not self._context.execute_async_v3(self.stream.cuda_stream):
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
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:
        return False, f"TensorRT is not installed ({str(e).splitlines()[0] if str(e) else type(e).__name__}); " \
                      f"{INSTALL_HINT}"
    if int(trt.__version__.split(".")[0]) < 11:
        return False, f"TensorRT {trt.__version__} found, but this adapter uses the TensorRT 11 API; {INSTALL_HINT}"
    import torch

    if not torch.cuda.is_available():
        return False, ("no CUDA GPU here (torch.cuda.is_available() is False); TensorRT 11 needs an NVIDIA GPU "
                       "(Turing or newer) with an R580+ driver")
    return True, ""
