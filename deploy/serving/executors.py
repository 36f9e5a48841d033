"""Executors: N concurrent copies of one runtime's model, each with its share of the cores, loaded once per layout and
reused by every trial (runtime adapters from runtimes/, built through deploy.models.make_runtime)."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.errors import UsageError
from core.onnx_file import OnnxInfo
from deploy.models import TorchModel, make_runtime
from deploy.serving.batcher import BatchPolicy
from runtimes.options import RuntimeOptions

log = logging.getLogger(__name__)
MODES = ("instances", "streams")  # one runtime per executor; or one OpenVINO model with one stream per executor
MAX_EXECUTORS = 8


@dataclass(frozen=True)
class ServingTarget:
    """What a server runs: a runtime on an ONNX file (the torch runtime: on the checkpoint it was exported from)."""
    runtime: str
    model: Path
    info: OnnxInfo
    torch_model: TorchModel | None = None
    precision: str | None = None            # None = the file's own; "bf16" = an fp32 file computed in bf16

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision or self.info.precision}"


@dataclass(frozen=True)
class Layout:
    """How the cores are split: ``executors`` concurrent inferences with ``threads`` threads each (they add up to
    the cores), as separate runtimes (``instances``) or as OpenVINO streams of one compiled model (``streams``)."""
    executors: int
    threads: int
    mode: str = "instances"

    def __post_init__(self) -> None:
        if self.mode not in MODES or not 1 <= self.executors <= MAX_EXECUTORS or self.threads < 1:
            raise UsageError(f"layout {self.executors} executor(s) x {self.threads} thread(s), mode {self.mode!r}: "
                             f"expected 1..{MAX_EXECUTORS} executors, >= 1 thread, mode one of {', '.join(MODES)}")

    @property
    def label(self) -> str:
        return f"{self.executors}x{self.threads}t" + (" streams" if self.mode == "streams" else "")


@dataclass(frozen=True)
class ServingConfig:
    """One serving configuration: the batcher's policy and the executor layout."""
    max_batch: int
    queue_delay_us: int
    executors: int
    threads: int                            # per executor
    mode: str = "instances"
    preferred: tuple[int, ...] = ()

    @property
    def layout(self) -> Layout:
        return Layout(self.executors, self.threads, self.mode)

    def policy(self, max_queue_wait_us: int | None = None) -> BatchPolicy:
        return BatchPolicy(self.max_batch, self.queue_delay_us, self.preferred, max_queue_wait_us)

    @property
    def label(self) -> str:
        return f"batch<={self.max_batch} delay {self.queue_delay_us} us {self.layout.label}"

    def to_dict(self) -> dict[str, Any]:
        return {"max_batch": self.max_batch, "queue_delay_us": self.queue_delay_us, "executors": self.executors,
                "threads": self.threads, "mode": self.mode, "preferred_batch_sizes": list(self.preferred)}


def layouts(runtime: str, cores: int) -> list[Layout]:
    """Every way to split ``cores`` into equal executors (1..8 of them), plus OpenVINO's streams for 2 or more."""
    found = []
    for n in range(1, min(cores, MAX_EXECUTORS) + 1):
        if cores % n == 0:
            found.append(Layout(n, cores // n))
            if runtime == "openvino" and n > 1:
                found.append(Layout(n, cores // n, "streams"))
    return found


class _SyncBackend:
    """One runtime on its own dispatcher thread: ``start`` runs the batch and calls ``on_done`` before returning."""
    asynchronous = False

    def __init__(self, runtime, input_name: str) -> None:
        self.runtime, self._input = runtime, input_name
        self.on_done: Callable[[Any, dict[str, np.ndarray]], None] | None = None

    def wait_idle(self) -> None:
        """Always idle between batches: its dispatcher thread is the only caller."""

    def start(self, batch: np.ndarray, userdata: Any) -> None:
        outputs = self.runtime.infer({self._input: batch})
        self.on_done(userdata, outputs)

    def wait_all(self) -> None:
        """Nothing runs once ``start`` returned."""


class _AsyncBackend:
    """An OpenVINO AsyncQueue: ``start`` returns once a request has the batch; its callback calls ``on_done``."""
    asynchronous = True

    def __init__(self, runtime, max_batch: int, streams: int) -> None:
        self.runtime = runtime
        self.on_done: Callable[[Any, dict[str, np.ndarray]], None] | None = None
        self.queue = runtime.async_queue(max_batch, streams, lambda userdata, outputs: self.on_done(userdata, outputs))

    def wait_idle(self) -> None:
        self.queue.wait_idle()

    def start(self, batch: np.ndarray, userdata: Any) -> None:
        self.queue.start(batch, userdata)

    def wait_all(self) -> None:
        self.queue.wait_all()


class Executors:
    """The executors of one layout for one target, loaded at construction (``close`` releases them).

    ONNX Runtime: one session per executor with ``threads`` intra-op threads. OpenVINO: ``instances`` = one compiled
    model per executor (latency hint, ``threads`` threads), ``streams`` = one compiled model with ``executors``
    streams over all the threads; both compile a dynamic batch 1..``max_batch`` and run through an AsyncInferQueue.
    torch: one model per executor, torch's intra-op threads set to ``threads`` while these executors live.
    """

    def __init__(self, target: ServingTarget, layout: Layout, max_batch: int) -> None:
        if layout.mode == "streams" and target.runtime != "openvino":
            raise UsageError(f"{target.runtime}: streams are OpenVINO's; use instances")
        self.target, self.layout, self.max_batch = target, layout, max_batch
        self._stack = contextlib.ExitStack()
        self.backends: list[Any] = []
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        target, layout = self.target, self.layout
        if target.runtime == "torch":
            from core.host import torch_threads

            self._stack.enter_context(torch_threads(layout.threads))
        streams = layout.mode == "streams"
        copies = 1 if streams else layout.executors
        threads = layout.threads * (layout.executors if streams else 1)
        for _ in range(copies):
            rt = make_runtime(target.runtime, target.model, target.info, target.torch_model,
                              RuntimeOptions(threads=threads, precision=target.precision))
            rt.load()
            self._stack.callback(rt.close)
            spec = rt.input_specs()
            if len(spec) != 1 or any(d is None for d in spec[0].shape[1:]):
                raise UsageError(f"{target.model}: serving feeds one input with a fixed sample shape; the model has "
                                 f"{', '.join(f'{s.name} {s.shape_str()}' for s in spec)}")
            self.input_name, self.sample_shape, self.dtype = spec[0].name, tuple(spec[0].shape[1:]), spec[0].dtype
            self.output_name = rt.output_names()[0]
            self.precision = rt.precision
            if target.runtime == "openvino":
                self.backends.append(_AsyncBackend(rt, self.max_batch, layout.executors if streams else 1))
            else:
                self.backends.append(_SyncBackend(rt, self.input_name))

    def describe(self) -> dict[str, Any]:
        """The layout and what the runtimes report (OpenVINO: the streams and threads it compiled)."""
        info: dict[str, Any] = {"layout": self.layout.label, "executors": self.layout.executors,
                                "threads": self.layout.threads, "mode": self.layout.mode}
        first = self.backends[0] if self.backends else None
        if isinstance(first, _AsyncBackend):
            info["openvino"] = first.queue.describe()
        elif first is not None:
            info["runtime"] = first.runtime.describe()
        return info

    def close(self) -> None:
        for backend in self.backends:
            with contextlib.suppress(RuntimeError):
                backend.wait_all()
        self.backends = []
        self._stack.close()
