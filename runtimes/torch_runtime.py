"""The PyTorch reference runtime: a model rebuilt from a checkpoint (or given), eager or torch.compile, CPU or CUDA."""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import nn

from runtimes.base import Runtime, TensorSpec
from runtimes.errors import InferenceError, RuntimeUnavailableError
from trainer.device import resolve_device

ModelSource = Union[nn.Module, Callable[[], nn.Module], str, os.PathLike]


class TorchRuntime(Runtime):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode()``.

    Args:
        model: An ``nn.Module`` (moved to ``device`` and put in eval mode in place), a callable returning one, or a
            checkpoint path (run folder or ``.safetensors``) loaded with ``trainer.checkpoint.load_checkpoint``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        compile: Wrap the model in ``torch.compile(dynamic=False)``; compiling happens on the first call per shape.
        allow_tf32: Allow TF32 matmuls/convolutions on CUDA. Off by default so fp32 parity holds.
        cudnn_benchmark: Let cuDNN pick the fastest convolution per shape on CUDA (the usual eager setting).
        input_name, output_name, input_shape: The I/O contract (names as in the ONNX graph; shape without batch).
    """
    name = "torch"

    def __init__(self, model: ModelSource, *, device: str = "cpu", compile: bool = False, allow_tf32: bool = False,
                 cudnn_benchmark: bool = True, input_name: str = "input", output_name: str = "logits",
                 input_shape: Sequence[int] = (3, 227, 227)) -> None:
        super().__init__()
        self._source, self._device_name, self._compile = model, device, compile
        self._allow_tf32, self._cudnn_benchmark = allow_tf32, cudnn_benchmark
        self._input_name, self._output_name, self._input_shape = input_name, output_name, tuple(input_shape)
        self._model: Any = None
        self._saved_flags: tuple[bool, bool, bool] | None = None
        self.checkpoint_path: str | None = None

    def _load(self) -> None:
        device = _resolve_device(self._device_name)
        model = self._build_model()
        self.device = device.type
        if device.type == "cuda":
            self._saved_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                                 torch.backends.cudnn.benchmark)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self._allow_tf32
            torch.backends.cudnn.benchmark = self._cudnn_benchmark
            self.stream = torch.cuda.Stream(device=device)
        model = model.eval().to(device)
        param = next(model.parameters(), None)
        self.precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(getattr(param, "dtype", None), "fp32")
        self._dtype = torch.float32 if param is None else param.dtype
        self._model = torch.compile(model, dynamic=False) if self._compile else model
        self._torch_device = device

    def _build_model(self) -> nn.Module:
        source = self._source
        if isinstance(source, (str, os.PathLike)):
            from trainer.checkpoint import load_checkpoint

            ckpt = load_checkpoint(source)
            self.checkpoint_path = str(ckpt.path)
            return ckpt.build_model()
        model = source if isinstance(source, nn.Module) else source()
        if not isinstance(model, nn.Module):
            raise TypeError(f"torch runtime: expected an nn.Module (or a callable returning one), got "
                            f"{type(model).__name__}")
        return model

    def _close(self) -> None:
        if self._saved_flags is not None:  # these are process-wide: leave them as found
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = self._saved_flags
            self._saved_flags = None
        self._model = self._x = self._y = None

    def _input_specs(self) -> list[TensorSpec]:
        dtype = {torch.float16: "float16"}.get(self._dtype, "float32")
        return [TensorSpec(self._input_name, (None, *self._input_shape), dtype)]

    def _output_names(self) -> list[str]:
        return [self._output_name]

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        x = torch.from_numpy(feeds[self._input_name])
        if self.stream is not None:
            with self._stream_context():
                x = x.to(self._torch_device)
            self.stream.synchronize()
        self._x = x

    def _run(self) -> None:
        try:
            with torch.inference_mode(), self._stream_context():
                self._y = self._model(self._x)
        except torch.OutOfMemoryError as e:
            raise InferenceError(f"torch: out of memory at batch {self._x.shape[0]}: {str(e).splitlines()[0]}") \
                from None

    def _fetch(self) -> dict[str, np.ndarray]:
        return {self._output_name: self._y.detach().to("cpu").numpy().copy()}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(compile=self._compile, allow_tf32=self._allow_tf32, cudnn_benchmark=self._cudnn_benchmark,
                    threads=torch.get_num_threads(),
                    checkpoint=self.checkpoint_path)
        if self.device == "cuda" and self._loaded:
            info["gpu"] = torch.cuda.get_device_name(self._torch_device)
        return info


def _resolve_device(name: str) -> torch.device:
    """The trainer's device rules (bad names and indices are errors), with a missing GPU as "unavailable" (exit 3)."""
    if name != "auto" and name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeUnavailableError(f"torch on {name}: no CUDA GPU here (torch.cuda.is_available() is False); "
                                      "use device 'cpu' or 'auto'")
    return resolve_device(name)
