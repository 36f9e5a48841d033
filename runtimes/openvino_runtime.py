"""OpenVINO: one synchronous request per call, latency hint, a static-batch model compiled per batch size; for
serving, an asynchronous request queue on a dynamic-batch model with one or more streams."""
from __future__ import annotations

import functools
import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from core.host import usable_cores
from runtimes.base import Runtime, TensorSpec
from runtimes.errors import InputMismatchError, RuntimeLoadError, RuntimeOptionError, RuntimeUnavailableError

log = logging.getLogger(__name__)
MIN_VERSION = (2025, 0)
INSTALL_HINT = "pip install 'openvino==2026.4.*'"
PRECISIONS = ("fp32", "fp16", "int8", "bf16")  # None = the file's own; bf16 = an fp32 file run in bf16
MAX_COMPILED = 4  # static-batch compiled models kept; each holds its own repacked weights (0.1-0.25 GB for AlexNet)


class OpenVinoRuntime(Runtime):
    """OpenVINO with ``PERFORMANCE_HINT=LATENCY`` (one stream, every thread on the one request: what
    ``benchmark_app -hint latency`` sets; the THROUGHPUT hint splits the cores into streams, halving one request's).

    Args:
        path: The ONNX file.
        device: An OpenVINO device in ``Core().available_devices`` (CPU, GPU, NPU...); never a silent fallback.
        threads: CPU inference threads (default: the cores this process may use).
        precision: The arithmetic. None = the file's own: fp32 runs with ``INFERENCE_PRECISION_HINT=f32`` (OpenVINO
            would pick bf16 on CPUs that have it), fp16 with f16 where the device has it else f32, int8 with
            OpenVINO's default for the float layers (measured faster than f32). ``"bf16"`` runs an fp32 file in bf16,
            refused where the device has no native bf16.
        batch_sizes: Batch sizes to compile at load; any other compiles on first use. Each batch size gets its own
            static-shape model (the MAX_COMPILED most recently used are kept; the first MAX_COMPILED compile at load).
    """
    name = "openvino"
    compile_config: dict[str, Any] = {}  # more compile_model properties, e.g. {"PERF_COUNT": True} to profile
    preferred_lrn = "native"  # one LRN node: faster than the banded conv on OpenVINO (benchmarks/cpu_runtimes.py)

    def __init__(self, path: str | os.PathLike, *, device: str = "CPU", threads: int | None = None,
                 precision: str | None = None, batch_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        if precision is not None and precision not in PRECISIONS or threads is not None and threads < 1:
            raise RuntimeOptionError(f"openvino: precision {precision!r}, threads {threads!r}; expected precision "
                                     f"None (the file's own) or one of {', '.join(PRECISIONS)}, threads >= 1")
        self.path, self._device, self._precision = Path(path), device.upper(), precision
        self.device = self._device.lower()
        self._threads, self._batch_sizes = threads or usable_cores(), tuple(batch_sizes)
        self._compiled: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        self._core = self._hint = self._version = self._request = self._feeds = None

    @classmethod
    def create(cls, model: str | os.PathLike, options: Any, batch_sizes: tuple[int, ...] = (),
               io: Any = None) -> OpenVinoRuntime:
        device = "CPU" if options.device in ("auto", "cpu") else options.device
        return cls(model, device=device, threads=options.threads, precision=options.precision,
                   batch_sizes=batch_sizes)

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        try:
            import openvino
        except ImportError as e:
            return False, f"openvino is not installed ({e}); {INSTALL_HINT}"
        version = openvino.get_version()
        if tuple(int(p) for p in version.split("-")[0].split(".")[:2]) < MIN_VERSION:
            return False, f"openvino {version} is older than {MIN_VERSION[0]}.{MIN_VERSION[1]}; {INSTALL_HINT}"
        return True, ""

    @classmethod
    def supports(cls, precision: str) -> tuple[bool, str]:
        ok, reason = cls.is_available()
        if ok and precision == "bf16":
            core = shared_core()
            if not any("BF16" in core.get_property(d, "OPTIMIZATION_CAPABILITIES") for d in core.available_devices):
                return False, f"openvino bf16: no device here has native bf16 ({', '.join(core.available_devices)})"
        return ok, reason

    def _load(self) -> None:
        import openvino as ov
        from openvino import frontend

        core, self._version = shared_core(), ov.get_version()
        if self._device not in core.available_devices + [d.split(".")[0] for d in core.available_devices]:
            raise RuntimeUnavailableError(f"openvino: device {self._device!r} is not available here; available: "
                                          f"{', '.join(core.available_devices)}")
        onnx = frontend.FrontEndManager().load_by_framework("onnx")  # core.read_model would try every frontend
        try:
            model = onnx.convert(onnx.load(str(self.path)))
        except (RuntimeError, frontend.GeneralFailure, frontend.OpConversionFailure, frontend.OpValidationFailure,
                frontend.NotImplementedFailure, frontend.InitializationFailure) as e:
            raise RuntimeLoadError(f"openvino cannot read {self.path}: {_first_line(e)}") from None
        self.precision = self._resolve_precision(model)
        caps = core.get_property(self._device, "OPTIMIZATION_CAPABILITIES")
        if self.precision == "bf16" and "BF16" not in caps:
            raise RuntimeUnavailableError(f"openvino: {self._device} has no native bf16 (capabilities: "
                                          f"{', '.join(caps)}); OpenVINO would silently run f32 instead")
        self._hint = {"bf16": "bf16", "fp32": "f32", "fp16": "f16" if "FP16" in caps else "f32"}.get(self.precision)
        self._core, self._model = core, model
        self._inputs = [TensorSpec(p.get_any_name(), tuple(d.get_length() if d.is_static else None
                                                            for d in p.get_partial_shape()),
                                   np.dtype(p.get_element_type().to_dtype()).name) for p in model.inputs]
        self._outputs = [p.get_any_name() for p in model.outputs]
        # Only as many as are kept: compiling more here would evict the first ones before the sweep reaches them.
        for batch in self._batch_sizes[:MAX_COMPILED] if all(None not in s.shape[1:] for s in self._inputs) else ():
            self._compile(tuple((batch, *s.shape[1:]) for s in self._inputs))

    def _resolve_precision(self, model) -> str:
        """The file's precision (the exporter's metadata, else Q/DQ → int8, f16 weights → fp16) checked against the
        one asked for."""
        key = ["framework", "alexnet_deploy.precision"]
        own = model.get_rt_info(key).astype(str).strip('"') if model.has_rt_info(key) else (
            "int8" if any(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) else
            "fp16" if any(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "f16"
                          for op in model.get_ops()) else "fp32")
        if self._precision not in (None, own) and (self._precision, own) != ("bf16", "fp32"):
            raise RuntimeOptionError(f"openvino: precision {self._precision!r} for {self.path.name}, which holds "
                                     f"{own}; expected None (its own){' or bf16' if own == 'fp32' else ''}")
        return self._precision or own

    def _compile(self, shapes: tuple) -> Any:
        """The infer request of a model compiled for these input shapes (static: no shape inference per call)."""
        if shapes not in self._compiled:
            model = self._model.clone()
            model.reshape({s.name: list(shape) for s, shape in zip(self._inputs, shapes)})
            compiled = self._compile_model(model, {"PERFORMANCE_HINT": "LATENCY"})
            self._compiled[shapes] = compiled, compiled.create_infer_request()
            if len(self._compiled) > MAX_COMPILED:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(shapes)
        return self._compiled[shapes][1]

    def _compile_model(self, model: Any, config: dict[str, Any]) -> Any:
        """``model`` compiled with ``config`` plus this runtime's threads and precision hint, refusing a silent
        precision fallback."""
        config = {**config, **self.compile_config}
        config.update({"INFERENCE_NUM_THREADS": self._threads} if self._device == "CPU" else {})
        config.update({"INFERENCE_PRECISION_HINT": self._hint} if self._hint else {})
        try:
            compiled = self._core.compile_model(model, self._device, config)
        except RuntimeError as e:
            raise RuntimeLoadError(f"openvino cannot compile {self.path}: {_first_line(e)}") from None
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if self._hint and got != self._hint:
            raise RuntimeUnavailableError(f"openvino: {self._device} compiled {got} when asked for {self._hint} "
                                          "inference; refusing the silent fallback")
        return compiled

    def async_queue(self, max_batch: int, streams: int = 1,
                    callback: Callable[[Any, dict[str, np.ndarray]], None] | None = None) -> "AsyncQueue":
        """An asynchronous request queue for serving: one model compiled for every batch size 1..``max_batch`` (a
        dynamic batch dimension: measured 2-7 % slower per call than a static shape, but one compiled model instead
        of one per size, each holding its own copy of the weights) with ``streams`` inference streams over this
        runtime's threads (the THROUGHPUT hint's layout for more than one stream, LATENCY for one) and one infer
        request per stream (``openvino.AsyncInferQueue``).

        Args:
            max_batch: The largest batch it will run (1..256).
            streams: Inference streams (``NUM_STREAMS``); requests run concurrently on them.
            callback: Called as ``callback(userdata, outputs)`` on OpenVINO's thread when a batch is done, with
                caller-owned copies of the outputs by name.

        Raises:
            RuntimeStateError: called before ``load()``. RuntimeOptionError: a batch or stream count out of range.
            RuntimeLoadError: OpenVINO cannot compile it.
        """
        import openvino as ov

        self._require_loaded("async_queue")
        if not (1 <= max_batch <= 256 and 1 <= streams <= max(1, self._threads)):
            raise RuntimeOptionError(f"openvino: async queue with max_batch {max_batch}, streams {streams}; expected "
                                     f"1..256 and 1..{max(1, self._threads)} (one thread per stream at least)")
        model = self._model.clone()
        model.reshape({s.name: ov.PartialShape([ov.Dimension(1, max_batch), *s.shape[1:]]) for s in self._inputs})
        hint = "THROUGHPUT" if streams > 1 else "LATENCY"
        compiled = self._compile_model(model, {"PERFORMANCE_HINT": hint, "NUM_STREAMS": streams})
        return AsyncQueue(compiled, self._inputs, self._outputs, max_batch, streams, callback)

    def _close(self) -> None:
        self._compiled.clear()
        self._model = self._core = self._request = self._feeds = None

    def _input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    def _output_names(self) -> list[str]:
        return list(self._outputs)

    def _prepare(self, feeds: dict[str, np.ndarray]) -> None:
        import openvino as ov

        self._request = self._compile(tuple(feeds[s.name].shape for s in self._inputs))
        self._feeds = feeds  # the request reads these arrays in place (shared memory): keep them alive
        for index, spec in enumerate(self._inputs):
            self._request.set_input_tensor(index, ov.Tensor(feeds[spec.name], shared_memory=True))

    def _run(self) -> None:
        self._request.infer()

    def _fetch(self) -> dict[str, np.ndarray]:  # copies: the request overwrites its output tensors on the next call
        return {name: self._request.get_output_tensor(i).data.copy() for i, name in enumerate(self._outputs)}

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(model=str(self.path), openvino=self._version, openvino_device=self._device,
                    threads=self._threads if self._device == "CPU" else None, performance_hint="LATENCY",
                    precision_hint=self._hint or "default")
        if self._compiled:  # what OpenVINO really compiled (the latest batch size), not what was asked
            get = next(reversed(self._compiled.values()))[0].get_property
            info.update(streams=int(get("NUM_STREAMS")), compiled_batches=[s[0][0] for s in self._compiled],
                        inference_precision=get("INFERENCE_PRECISION_HINT").get_type_name(),
                        threads=int(get("INFERENCE_NUM_THREADS")) if self._device == "CPU" else None)
        return info


class AsyncQueue:
    """Batches run asynchronously on one compiled model, one infer request per stream (``OpenVinoRuntime.async_queue``).

    ``wait_idle()`` blocks (without holding the GIL) until a request is free, so a dispatcher forms its next batch
    only when it can run; ``start(batch, userdata)`` hands the batch to that request and returns; the callback gets
    ``(userdata, outputs)``. The batch array is read in place and kept alive until its callback ran.
    """

    def __init__(self, compiled: Any, inputs: list[TensorSpec], outputs: list[str], max_batch: int, streams: int,
                 callback: Callable[[Any, dict[str, np.ndarray]], None] | None) -> None:
        import openvino as ov

        self.max_batch, self.jobs = max_batch, streams
        self._inputs, self._outputs, self._callback = inputs, outputs, callback
        self._compiled = compiled
        self._queue = ov.AsyncInferQueue(compiled, streams)
        self._queue.set_callback(self._done)

    def describe(self) -> dict[str, Any]:
        """What OpenVINO compiled: streams, threads, the inference precision and its optimal request count."""
        get = self._compiled.get_property
        return {"streams": int(get("NUM_STREAMS")), "threads": int(get("INFERENCE_NUM_THREADS")),
                "jobs": self.jobs, "optimal_requests": int(get("OPTIMAL_NUMBER_OF_INFER_REQUESTS")),
                "performance_hint": str(get("PERFORMANCE_HINT")), "max_batch": self.max_batch,
                "inference_precision": get("INFERENCE_PRECISION_HINT").get_type_name()}

    def wait_idle(self) -> None:
        """Block until an infer request is free."""
        self._queue.get_idle_request_id()

    def start(self, batch: np.ndarray, userdata: Any = None) -> None:
        """Run ``batch`` (``(n, *sample)``, 1 <= n <= max_batch) on a free request (waits for one if none is).

        Raises:
            InputMismatchError: a single-input model fed another shape or dtype.
        """
        import openvino as ov

        spec = self._inputs[0]
        if (len(self._inputs) != 1 or batch.dtype != np.dtype(spec.dtype) or batch.ndim != len(spec.shape)
                or tuple(batch.shape[1:]) != tuple(spec.shape[1:]) or not 1 <= batch.shape[0] <= self.max_batch):
            raise InputMismatchError(f"openvino: batch {tuple(batch.shape)} {batch.dtype}; expected one input of "
                                     f"(1..{self.max_batch}, {', '.join(map(str, spec.shape[1:]))}) {spec.dtype}")
        batch = np.ascontiguousarray(batch)
        self._queue.start_async({0: ov.Tensor(batch, shared_memory=True)}, (batch, userdata))

    def wait_all(self) -> None:
        """Block until every started batch is done (its callback returned)."""
        self._queue.wait_all()

    def _done(self, request: Any, userdata: tuple[np.ndarray, Any]) -> None:
        # Copies: the request overwrites its output tensors on its next batch. Nothing may raise into OpenVINO's
        # thread, so a failing callback is logged.
        outputs = {name: request.get_output_tensor(i).data.copy() for i, name in enumerate(self._outputs)}
        if self._callback is not None:
            try:
                self._callback(userdata[1], outputs)
            except Exception:  # noqa: BLE001 - an exception here would terminate OpenVINO's callback thread
                log.exception("openvino async callback failed")


@functools.cache
def shared_core() -> Any:
    """The process's one ``openvino.Core``, kept until exit.

    Each Core's CPU plugin installs its own signal stack on the loading thread and, when the Core dies, puts back the
    one it found. Two Cores that die out of order (A, B, del A, del B) leave the thread on A's unmapped stack, and the
    next Python signal handler (SIGINT, SIGCHLD, faulthandler's) kills the process with SIGSEGV; measured with
    openvino 2026.4 (tests/runtimes/test_openvino.py::test_runtimes_closed_out_of_order_leave_signals_working).
    One Core that lives until exit also loads the plugin once.
    """
    import openvino as ov

    return ov.Core()


def _first_line(e: BaseException) -> str:
    """OpenVINO's first informative line (its messages open with 'Exception from <file>:<line>:' and 'Check ...')."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from ", "Check '", "FrontEnd API failed"))]
    return (useful or lines or [type(e).__name__])[0]
