"""Layer time: each runtime's own profiler attributed to AlexNet's layers at one batch size, beside the end-to-end
latency measured at that batch without the profiler; a runtime without per-layer timing is listed as such."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from core.errors import ToolkitError, first_line
from core.onnx_file import OnnxInfo
from deploy.layers import attribute, profilers
from deploy.layers.attribute import LayerTime, ProfiledNode
from deploy.layers.capture import own_model
from deploy.models import TorchModel, make_runtime
from export.layers import LayerMap
from runtimes.base import Runtime
from runtimes.options import RuntimeOptions

# Measures a loaded runtime's p50 end-to-end latency (ms) on feeds: deploy/bench/timing.py's ``measure``, passed in by
# the caller (deploy/bench imports this room, so this room cannot import it).
Timer = Callable[[Runtime, Mapping[str, np.ndarray]], float]
log = logging.getLogger(__name__)
PROFILE_RUNS, PROFILE_WARMUP = 5, 2

# runtime → (what profiles it, how its node names read); a runtime missing here has no per-layer timing.
PROFILERS: dict[str, tuple[str, Any]] = {
    "onnxruntime": ("ONNX Runtime session profiling (node events)", attribute.candidates_ort),
    "openvino": ("OpenVINO PERF_COUNT profiling info (real_time)", attribute.candidates_openvino),
    "torch": ("torch.profiler CPU spans over each layer's modules", attribute.candidates_plain),
    "tensorrt": ("TensorRT IProfiler (report_layer_time)", attribute.candidates_tensorrt),
}
NO_PROFILER: dict[str, str] = {
    "onnxruntime-cuda": "ONNX Runtime's node events time the CUDA kernel launches on the host, not the GPU work, so "
                        "they would make a per-layer profile up",
}


@dataclass(frozen=True)
class LayerProfile:
    """Where one runtime × precision spends its time at one batch size."""
    runtime: str
    precision: str
    file: str
    batch_size: int
    profiler: str                        # what measured it ("" when none)
    available: bool
    reason: str = ""                     # why there is no profile
    layers: tuple[LayerTime, ...] = ()
    runs: int = 0
    profiler_total_ms: float | None = None  # the profiler's own total per run (ONNX Runtime's model_run span…)
    measured_ms: float | None = None     # p50 end-to-end latency at this batch, measured without the profiler
    unattributed: tuple[ProfiledNode, ...] = ()  # nodes whose name names no layer (their time is not in `layers`)

    @property
    def attributed_ms(self) -> float:
        return float(sum(t.ms for t in self.layers))

    @property
    def outside_ms(self) -> float | None:
        """Measured latency the profiler does not see: input/output copies, the runtime's own call overhead."""
        return None if self.measured_ms is None else self.measured_ms - self.attributed_ms

    @property
    def coverage(self) -> float | None:
        """Per-layer times summed ÷ measured latency."""
        return None if not self.measured_ms else self.attributed_ms / self.measured_ms

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "precision": self.precision, "file": self.file, "batch_size": self.batch_size,
                "profiler": self.profiler, "available": self.available, "reason": self.reason, "runs": self.runs,
                "attributed_ms": self.attributed_ms if self.available else None,
                "profiler_total_ms": self.profiler_total_ms, "measured_ms": self.measured_ms,
                "outside_ms": self.outside_ms if self.available else None,
                "coverage": self.coverage if self.available else None,
                "layers": [t.to_dict() for t in self.layers],
                "unattributed": [dataclasses.asdict(n) for n in self.unattributed]}


def has_profiler(name: str) -> tuple[bool, str]:
    """Whether runtime ``name`` gives per-layer timing, and why not."""
    if name in PROFILERS:
        return True, ""
    return False, NO_PROFILER.get(name, f"{name} has no per-layer profiler in this toolkit")


def feeds_at(images: np.ndarray, batch_size: int, input_name: str, dtype: str = "float32") -> dict[str, np.ndarray]:
    """``batch_size`` inputs: the images, repeated when there are fewer."""
    x = images[np.arange(batch_size) % len(images)]
    return {input_name: np.ascontiguousarray(x, dtype=dtype)}


def profile_layers(name: str, info: OnnxInfo, layer_map: LayerMap, torch_model: TorchModel | None,
                   options: RuntimeOptions, images: np.ndarray, batch_size: int, timer: Timer | None = None,
                   runs: int = PROFILE_RUNS) -> LayerProfile:
    """Profile runtime ``name`` on ``info.path`` at ``batch_size`` and attribute its nodes to layers.

    The end-to-end latency is measured first by ``timer`` on the runtime's plain adapter (the profiler's own
    bookkeeping is not in it; None: not measured); then the profiled adapter runs ``PROFILE_WARMUP`` + ``runs``
    times.
    A runtime without a profiler, or one that fails, gives a profile with ``available`` False and the reason.
    """
    precision = options.precision or info.precision
    blank = LayerProfile(name, precision, str(info.path), batch_size, PROFILERS.get(name, ("",))[0], False)
    ok, reason = has_profiler(name)
    if ok and name == "torch" and _torch_on_gpu(options.device):
        ok, reason = False, "torch.profiler's CPU spans time the kernel launches on a GPU, not the kernels"
    if not ok:
        return dataclasses.replace(blank, reason=reason)
    feeds = feeds_at(images, batch_size, info.inputs[0].name)
    try:
        measured = None
        if timer is not None:
            with make_runtime(name, info.path, info, torch_model, options, (batch_size,)) as rt:
                measured = float(timer(rt, feeds))
        nodes, total = _collect(name, info, torch_model, options, feeds, runs)
    except ToolkitError as e:
        log.warning("layer time %s %s: %s", name, precision, first_line(e))
        return dataclasses.replace(blank, reason=f"failed: {first_line(e)}")
    if not nodes:
        return dataclasses.replace(blank, reason="the profiler reported no nodes")
    times, stray = attribute.attribute(nodes, layer_map, PROFILERS[name][1])
    return LayerProfile(name, precision, str(info.path), batch_size, PROFILERS[name][0], True, "", times, runs,
                        total, measured, stray)


def _torch_on_gpu(device: str) -> bool:
    """Whether the torch runtime would run on a GPU (``auto`` picks one when there is one)."""
    if device == "cpu":
        return False
    if device != "auto":
        return True
    import torch

    return torch.cuda.is_available()


def _collect(name: str, info: OnnxInfo, torch_model: TorchModel | None, options: RuntimeOptions,
             feeds: dict[str, np.ndarray], runs: int) -> tuple[list[ProfiledNode], float | None]:
    if name == "torch":
        if torch_model is None:
            raise ToolkitError("the torch runtime needs the PyTorch checkpoint")
        plain = dataclasses.replace(options, compile=False)  # spans need eager modules

        def make(model):
            return make_runtime(name, info.path, info, TorchModel(None, torch_model.origin, lambda: model), plain)
        return profilers.torch_nodes(lambda: own_model(torch_model), make, feeds, PROFILE_WARMUP, runs)
    collect = {"onnxruntime": profilers.ort_nodes, "openvino": profilers.openvino_nodes,
               "tensorrt": profilers.tensorrt_nodes}[name]
    return collect(info.path, options, feeds, PROFILE_WARMUP, runs)
