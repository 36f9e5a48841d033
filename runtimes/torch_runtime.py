"""The PyTorch runtime: an ``nn.Module`` it is given (or a callable returning one), eager or torch.compile, on the CPU
or CUDA, in the module's precision or in bf16."""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from torch import nn

from core.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, TensorSpec
from core.errors import UnavailableError
from core.host import cpu_has_native_bf16, resolve_device
from runtimes.base import Runtime
from runtimes.errors import InferenceError, RuntimeLoadError, RuntimeOptionError, RuntimeUnavailableError

ModelSource = Union[nn.Module, Callable[[], nn.Module]]


class TorchRuntime(Runtime):
    """Runs an ``nn.Module`` in eval mode under ``torch.inference_mode()``.

    Args:
        model: An ``nn.Module`` (moved to ``device`` and put in eval mode in place) or a callable returning one (called
            in ``load``, so a checkpoint is read only when the runtime is used).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available).
        compile: Wrap the model in ``torch.compile(dynamic=False)``; compiling happens on the first call per shape.
        allow_tf32: Allow TF32 matmuls/convolutions on CUDA. Off by default so fp32 parity holds.
        cudnn_benchmark: Let cuDNN pick the fastest convolution per shape on CUDA (the usual eager setting).
        bf16: Cast the weights to bf16 and compute in bf16 (inputs and outputs stay float32); needs native bf16.
        source: What the model is (e.g. its checkpoint path), for reports.
        input_name, output_name, input_shape: The I/O contract (names as in the ONNX graph; shape without batch).
    """
    name = "torch"
    runs_onnx = False

    def __init__(self, model: ModelSource, *, device: str = "cpu", compile: bool = False, allow_tf32: bool = False,
                 cudnn_benchmark: bool = True, bf16: bool = False, source: str | None = None,
                 input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME,
                 input_shape: Sequence[int] = INPUT_SHAPE) -> None:
        super().__init__()
        self._source, self._device_name, self._compile = model, device, compile
        self._allow_tf32, self._cudnn_benchmark, self._bf16 = allow_tf32, cudnn_benchmark, bf16
        self._input_name, self._output_name, self._input_shape = input_name, output_name, tuple(input_shape)
        self._model: Any = None
        self._saved_flags: tuple[bool, bool, bool] | None = None
        self.source = source

    @classmethod
    def create(cls, model: ModelSource, options: Any, batch_sizes: tuple[int, ...] = (),
               io: Any = None) -> "TorchRuntime":
        if options.precision not in (None, "fp32", "bf16"):
            raise RuntimeOptionError(f"torch: precision {options.precision!r}; expected bf16 or the model's own")
        names = {} if io is None else {"input_name": io[0].name, "output_name": io[1].name,
                                       "input_shape": io[0].shape[1:]}
        return cls(model, device=options.device, compile=options.compile, allow_tf32=options.allow_tf32,
                   bf16=options.precision == "bf16", **names)

    @classmethod
    def supports(cls, precision: str) -> tuple[bool, str]:
        gpu = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
        if precision == "bf16" and not (cpu_has_native_bf16() or gpu):
            return False, ("torch bf16: this CPU has no native bf16 (avx512_bf16 or AMX) and there is no CUDA GPU "
                           "with it (Ampere or newer)")
        return True, ""

    def _load(self) -> None:
        try:
            device = resolve_device(self._device_name)
        except UnavailableError as e:
            raise RuntimeUnavailableError(f"torch: {e}") from None
        model = self._source if isinstance(self._source, nn.Module) else self._source()
        if not isinstance(model, nn.Module):
            raise RuntimeLoadError(f"torch runtime: expected an nn.Module (or a callable returning one), got "
                                   f"{type(model).__name__}")
        self.device = device.type
        if self._bf16:
            self._check_bf16(device)
        if device.type == "cuda":
            self._saved_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                                 torch.backends.cudnn.benchmark)
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self._allow_tf32
            torch.backends.cudnn.benchmark = self._cudnn_benchmark
            self.stream = torch.cuda.Stream(device=device)
        if self._bf16 or device.type != "cpu":
            # .to() casts and moves the module in place: a model given in code may be shared with other runtimes
            # (the fp32 reference among them), so cast a copy of it.
            model = copy.deepcopy(model)
        model = model.eval().to(device, dtype=torch.bfloat16 if self._bf16 else None)
        param = next(model.parameters(), None)
        self.precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(getattr(param, "dtype", None), "fp32")
        self._dtype = torch.float32 if param is None else param.dtype
        self._model = torch.compile(model, dynamic=False) if self._compile else model
        self._torch_device = device

    def _check_bf16(self, device: torch.device) -> None:
        # Ampere (8.0) or newer: torch.cuda.is_bf16_supported() also says yes to emulated bf16 on older GPUs.
        native = (torch.cuda.get_device_capability(device) >= (8, 0) if device.type == "cuda"
                  else cpu_has_native_bf16())
        if not native:
            raise RuntimeUnavailableError(f"torch bf16 on {device}: no native bf16 here (emulated bf16 is slower "
                                          "than fp32 and would misreport the precision)")

    def _close(self) -> None:
        if self._saved_flags is not None:  # these are process-wide: leave them as found
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = self._saved_flags
            self._saved_flags = None
        self._model = self._x = self._y = None

    def _input_specs(self) -> list[TensorSpec]:
        dtype = {torch.float16: "float16"}.get(self._dtype, "float32")  # bf16 models take float32 (no NumPy bf16)
        return [TensorSpec(self._input_name, (None, *self._input_shape), dtype)]

    def _output_names(self) -> list[str]:
        return [self._output_name]

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        x = torch.from_numpy(feeds[self._input_name])
        dtype = torch.bfloat16 if self._bf16 else None
        if self.stream is not None:
            with self._stream_context():  # the cast too: on the default stream it could race the model's read
                x = x.to(self._torch_device, dtype=dtype)
            self.stream.synchronize()
        self._x = x if dtype is None else x.to(dtype)  # a no-op where the stream already cast it

    def _run(self) -> None:
        try:
            with torch.inference_mode(), self._stream_context():
                self._y = self._model(self._x)
        except torch.OutOfMemoryError as e:
            raise InferenceError(f"torch: out of memory at batch {self._x.shape[0]}: {str(e).splitlines()[0]}") \
                from None

    def _fetch(self) -> dict[str, np.ndarray]:
        return {self._output_name: self._y.detach().to("cpu", torch.float32 if self._bf16 else None).numpy().copy()}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(compile=self._compile, allow_tf32=self._allow_tf32, cudnn_benchmark=self._cudnn_benchmark,
                    threads=torch.get_num_threads(), model=self.source)
        if self.device == "cuda" and self._loaded:
            info["gpu"] = torch.cuda.get_device_name(self._torch_device)
        return info
